"""Pick the implementation of a port by mode and settings.

Proof mode always gets the proof implementation. Live mode gets a real one when it is
configured, and :class:`RealRunUnconfigured` (FAILED, not retried) when it is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aicmo.config import Settings, get_settings
from aicmo.gateways.platforms import NATIVE, canonical
from aicmo.gateways.ports import EmailSender, SocialPoster
from aicmo.gateways.proof import ProofEmailSender, ProofSocialPoster
from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.errors import RealRunUnconfigured
from aicmo.orchestration.redaction import register_secret

if TYPE_CHECKING:
    from aicmo.gateways.accounts import Account, AccountStore
    from aicmo.gateways.social import NativeGateway

# The live implementations (smtplib, httpx, the rate limiter) are imported when live mode
# first asks for them: a proof-mode worker does not carry them in every pool process.

DEFAULT_SENDER = "aicmo@example.com"


def register_configured_secrets(settings: Settings | None = None) -> None:
    """Teach the redactor every secret in the settings, before anything can echo one."""
    s = settings or get_settings()
    for secret in (
        s.smtp_password,
        s.social_webhook_secret,
        s.social_webhook_token,
        s.llm_api_key,
        s.broker_sentinel_password,
        *s.social_webhook_urls.values(),
        *s.social_encryption_keys,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())


def default_sender(settings: Settings | None = None) -> str:
    """The From address of an email whose payload gives none."""
    return (settings or get_settings()).email_from or DEFAULT_SENDER


def email_sender(
    proof_mode: bool, artifacts: ArtifactWriter, settings: Settings | None = None
) -> EmailSender:
    if proof_mode:
        return ProofEmailSender(artifacts)
    s = settings or get_settings()
    register_configured_secrets(s)
    if not s.smtp_host:
        raise RealRunUnconfigured("live mode: no email sender is configured (set AICMO_SMTP_HOST)")
    from aicmo.gateways.smtp import SmtpEmailSender
    from aicmo.ratelimit import Bucket, get_rate_limiter

    bucket = None
    if s.smtp_requests_per_minute:
        bucket = Bucket(f"smtp:{s.smtp_host}", s.smtp_requests_per_minute, s.smtp_burst)
    return SmtpEmailSender(
        s.smtp_host,
        port=s.smtp_port,
        security=s.smtp_security,
        username=s.smtp_username,
        password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        timeout=s.smtp_timeout_seconds,
        ca_file=s.smtp_ca_file,
        limiter=get_rate_limiter(s) if bucket else None,
        bucket=bucket,
    )


def account_store(settings: Settings | None = None) -> AccountStore:
    from aicmo.db import get_engine
    from aicmo.gateways.accounts import AccountStore
    from aicmo.gateways.vault import get_vault

    s = settings or get_settings()
    return AccountStore(get_engine(s.database_url), get_vault(s))


def gateway_for(
    account: Account, store: AccountStore, settings: Settings | None = None
) -> NativeGateway:
    """The native gateway of an account's platform."""
    from aicmo.gateways.bluesky import BlueskyGateway
    from aicmo.gateways.linkedin import LinkedInGateway
    from aicmo.gateways.mastodon import MastodonGateway
    from aicmo.gateways.x import XGateway

    classes: dict[str, type[NativeGateway]] = {
        "mastodon": MastodonGateway,
        "bluesky": BlueskyGateway,
        "linkedin": LinkedInGateway,
        "x": XGateway,
    }
    return classes[account.platform](account, store, settings)


def native_gateway(
    platform: str, settings: Settings | None = None, campaign_id: int | None = None
) -> NativeGateway | None:
    """The gateway of the account connected for ``platform`` (the campaign's own, else the
    global one); None when the platform is not native or no account is connected."""
    name = canonical(platform)
    s = settings or get_settings()
    if name not in NATIVE or not s.social_encryption_keys:
        return None
    store = account_store(s)
    account = store.find(name, campaign_id)
    return None if account is None else gateway_for(account, store, s)


def social_poster(
    platform: str,
    proof_mode: bool,
    artifacts: ArtifactWriter,
    settings: Settings | None = None,
    campaign_id: int | None = None,
) -> SocialPoster:
    """Proof: an artifact. Live: the connected account's native gateway, else the
    configured webhook, else :class:`RealRunUnconfigured`."""
    if proof_mode:
        return ProofSocialPoster(artifacts)
    s = settings or get_settings()
    register_configured_secrets(s)
    native = native_gateway(platform, s, campaign_id)
    if native is not None:
        return native
    url = s.social_webhook_urls.get(platform) or s.social_webhook_urls.get("*")
    if url is None:
        raise RealRunUnconfigured(
            f"live mode: no social poster is configured for {platform!r} "
            f"(connect an account with `aicmo accounts add {canonical(platform)}`, or set "
            f'AICMO_SOCIAL_WEBHOOK_URLS, e.g. {{"{platform}": "https://..."}})'
        )
    from aicmo.gateways.webhook import WebhookSocialPoster
    from aicmo.ratelimit import Bucket, get_rate_limiter

    bucket = None
    if s.social_requests_per_minute:
        bucket = Bucket(f"social:{platform}", s.social_requests_per_minute, s.social_burst)
    return WebhookSocialPoster(
        platform,
        url.get_secret_value(),
        secret=s.social_webhook_secret.get_secret_value() if s.social_webhook_secret else None,
        token=s.social_webhook_token.get_secret_value() if s.social_webhook_token else None,
        connect_timeout=s.social_connect_timeout_seconds,
        timeout=s.social_timeout_seconds,
        limiter=get_rate_limiter(s) if bucket else None,
        bucket=bucket,
    )
