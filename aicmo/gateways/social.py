"""What the four native social gateways share: one account, HTTP with a hard deadline, the
platform's answer in the AOL's vocabulary, and token refresh under the account's lease.

* Rate limits: 429 (and 5xx) are transient with ``retry_after`` from Retry-After or the
  platform's reset header (:func:`aicmo.gateways.errors.retry_after_from_headers`).
* Expired access token: refreshed once (under the lease), and the call made again.
* Credentials refused (revoked token, wrong app password, failed refresh): permanent
  :class:`BadCredentials`, and the account is flagged AUTH_FAILED for the operator.
* Content refused (too long, duplicate, invalid): permanent, with the platform's message.

Each subclass gives the platform's wire shapes. No Celery here, no database transaction is
held across a call: the store opens its own short ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from aicmo.config import Settings, get_settings
from aicmo.gateways.accounts import Account, AccountStatus, AccountStore, AccountUnusable
from aicmo.gateways.errors import (
    BadCredentials,
    GatewayPermanentError,
    GatewayTransientError,
    error_for_status,
    provider_message,
)
from aicmo.gateways.http import send_with_deadline, shared_client
from aicmo.gateways.platforms import length_problem
from aicmo.gateways.ports import SendResult, SocialPost
from aicmo.orchestration.errors import Deferred
from aicmo.orchestration.redaction import register_secret

# What platforms answer to content they will not take (invalid, too long, duplicate).
CONTENT_STATUSES = frozenset({400, 409, 413, 422})
# Refresh this long before the recorded expiry, so a token does not lapse mid-call.
EXPIRY_MARGIN = timedelta(seconds=60)


class ContentRefused(GatewayPermanentError):
    """The platform will not take this content (too long, duplicate, invalid)."""


@dataclass(frozen=True)
class Refreshed:
    secrets: dict[str, Any]
    expires_at: datetime | None = None
    config: dict[str, Any] | None = None


def expires_in(seconds: object) -> datetime | None:
    try:
        return datetime.now(UTC) + timedelta(seconds=float(seconds))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class NativeGateway:
    """A SocialPoster (and per-post metrics) for one account on one platform."""

    platform = ""

    def __init__(
        self,
        account: Account,
        store: AccountStore,
        settings: Settings | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.account = account
        self.store = store
        self.timeout = self.settings.social_timeout_seconds
        self.client = client or shared_client(
            f"social-{self.platform}", self.settings.social_connect_timeout_seconds, self.timeout
        )
        self.provider = f"{self.platform} {account.handle}"
        self._remember_secrets()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.account.handle})"

    def _remember_secrets(self) -> None:
        for value in self.account.secrets.values():
            if isinstance(value, str):
                register_secret(value)

    # -- what a platform module provides ---------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        token = self.account.secrets.get("access_token", "")
        return {"Authorization": f"Bearer {token}"}

    def is_expired(self, response: httpx.Response) -> bool:
        """The access token expired (a refresh may help), as opposed to refused."""
        return response.status_code == 401 and self.can_refresh()

    def can_refresh(self) -> bool:
        return False

    def refresh_tokens(self) -> Refreshed:
        raise BadCredentials(self.provider, "the access token cannot be refreshed")

    def create(self, post: SocialPost, idempotency_key: str) -> SendResult:
        raise NotImplementedError

    def post_metrics(self, external_ids: list[str]) -> dict[str, dict[str, float]]:
        raise NotImplementedError

    def whoami(self) -> str:
        """A cheap authenticated read, for ``aicmo accounts test``: who the token is."""
        raise NotImplementedError

    # -- the port --------------------------------------------------------------------------

    def post(self, post: SocialPost, idempotency_key: str) -> SendResult:
        if self.account.status != AccountStatus.ACTIVE:
            raise AccountUnusable(
                f"{self.provider}: account {self.account.id} is {self.account.status}: "
                f"re-add its credentials and run `aicmo accounts test {self.account.id}`"
            )
        problem = length_problem(self.platform, post.content, self.max_length())
        if problem:
            raise ContentRefused(self.provider, f"content too long: {problem}")
        return self.create(post, idempotency_key)

    def max_length(self) -> int | None:
        value = self.account.config.get("max_characters")
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

    # -- HTTP ------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request within the deadline; network errors and timeouts are transient."""
        merged = {"Accept": "application/json", **(self.auth_headers() if auth else {})}
        merged.update(headers or {})
        request = self.client.build_request(method, url, headers=merged, **kwargs)
        try:
            return send_with_deadline(self.client, request, self.timeout)
        except httpx.TimeoutException as exc:
            raise GatewayTransientError(
                self.provider, f"timed out after {self.timeout:g}s ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise GatewayTransientError(
                self.provider, f"network error: {type(exc).__name__}: {exc}"
            ) from None

    def authorized(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A call with the account's token: refreshed first when it is about to expire, and
        once more when the platform says it expired. A refusal flags the account."""
        expires = self.account.access_expires_at
        if (
            self.can_refresh()
            and expires is not None
            and expires - EXPIRY_MARGIN <= datetime.now(UTC)
        ):
            self.refresh()
        response = self.send(method, url, **kwargs)
        if self.is_expired(response):
            self.refresh()
            response = self.send(method, url, **kwargs)
        if response.status_code == 401 or self.is_auth_refusal(response):
            raise self.refused(response)
        return response

    def is_auth_refusal(self, response: httpx.Response) -> bool:
        return response.status_code == 401

    def refused(
        self, response: httpx.Response, what: str = "credentials refused"
    ) -> BadCredentials:
        error = BadCredentials(
            self.provider,
            f"{what} (HTTP {response.status_code}: {self.message(response)})",
            status=response.status_code,
        )
        self.store.flag_auth_failed(self.account.id, str(error))
        return error

    def message(self, response: httpx.Response) -> str:
        return provider_message(response.content) or response.reason_phrase

    def fail(self, response: httpx.Response) -> GatewayTransientError | GatewayPermanentError:
        """A non-2xx answer that is not about the token: rate limit, outage, bad content."""
        error = error_for_status(
            self.provider, response.status_code, self.message(response), headers=response.headers
        )
        if response.status_code in CONTENT_STATUSES and not isinstance(error, BadCredentials):
            return ContentRefused(self.provider, str(error).split(": ", 1)[-1], status=error.status)
        return error

    # -- refresh under the account's lease -------------------------------------------------

    def oauth_refreshed(self, response: httpx.Response) -> Refreshed:
        """The new tokens from an OAuth 2.0 refresh answer (RFC 6749 section 5): a refused
        refresh means the grant is gone (permanent); a rotated refresh token replaces ours."""
        if response.status_code in (400, 401):
            raise BadCredentials(
                self.provider,
                f"token refresh refused (HTTP {response.status_code}: {self.message(response)})",
            )
        if not response.is_success:
            raise self.fail(response)
        document = response.json()
        secrets = {**self.account.secrets, "access_token": document["access_token"]}
        if document.get("refresh_token"):
            secrets["refresh_token"] = document["refresh_token"]
        return Refreshed(secrets, expires_in(document.get("expires_in")))

    def refresh(self) -> None:
        seen = self.account.version
        lease = self.settings.social_refresh_lease_seconds
        token = self.store.claim_refresh(self.account.id, seen, lease)
        if token is None:
            # Another worker refreshes (or just did): wait for its tokens, never refresh too.
            newer = self.store.wait_for_version(
                self.account.id, seen, self.settings.social_refresh_wait_seconds
            )
            if newer is None:
                # Not a failure of this action: it runs again once the refresh is done.
                raise Deferred(
                    f"{self.provider}: another worker is refreshing the token", retry_after=lease
                )
            self.account = newer
            self._remember_secrets()
            if newer.status != AccountStatus.ACTIVE:
                raise AccountUnusable(
                    f"{self.provider}: account {newer.id} is {newer.status} "
                    "(its token refresh was refused)"
                )
            return
        try:
            fresh = self.refresh_tokens()
        except BadCredentials as exc:
            self.store.flag_auth_failed(self.account.id, str(exc))
            self.store.release_refresh(self.account.id, token)
            raise
        except BaseException:
            self.store.release_refresh(self.account.id, token)
            raise
        for value in fresh.secrets.values():
            if isinstance(value, str):
                register_secret(value)
        if not self.store.finish_refresh(
            self.account.id, token, fresh.secrets, fresh.expires_at, fresh.config
        ):
            raise GatewayTransientError(
                self.provider, "the token refresh outlived its lease; trying again"
            )
        self.account = self.store.load(self.account.id)
        self._remember_secrets()
