"""Pick the implementation of a port by mode and settings.

Proof mode always gets the proof implementation. Live mode gets a real one when it is
configured, and :class:`RealRunUnconfigured` (FAILED, not retried) when it is not.
"""

from __future__ import annotations

from aicmo.config import Settings, get_settings
from aicmo.gateways.ports import EmailSender, SocialPoster
from aicmo.gateways.proof import ProofEmailSender, ProofSocialPoster
from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.errors import RealRunUnconfigured
from aicmo.orchestration.redaction import register_secret

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
        *s.social_webhook_urls.values(),
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


def social_poster(
    platform: str, proof_mode: bool, artifacts: ArtifactWriter, settings: Settings | None = None
) -> SocialPoster:
    if proof_mode:
        return ProofSocialPoster(artifacts)
    s = settings or get_settings()
    register_configured_secrets(s)
    url = s.social_webhook_urls.get(platform) or s.social_webhook_urls.get("*")
    if url is None:
        raise RealRunUnconfigured(
            f"live mode: no social poster is configured for {platform!r} "
            f'(set AICMO_SOCIAL_WEBHOOK_URLS, e.g. {{"{platform}": "https://..."}})'
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
