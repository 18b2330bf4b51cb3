"""How a provider's answer becomes the AOL's vocabulary.

Transient (the AOL retries, honouring Retry-After): network errors, timeouts, 408, 425, 429,
5xx. Permanent (FAILED, never retried): bad credentials (401, 403) and every other 4xx, with
the provider's message. Messages pass through :func:`redact` before they reach an exception,
so a provider that echoes a key back does not put it in ``last_error``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from aicmo.orchestration.errors import PermanentError, TransientError
from aicmo.orchestration.redaction import redact

# A provider asking for more than a day is misbehaving; the AOL still retries after a day.
MAX_RETRY_AFTER_SECONDS = 86_400.0
MAX_DETAIL_CHARS = 500
TRANSIENT_STATUSES = frozenset({408, 425, 429})
CREDENTIAL_STATUSES = frozenset({401, 403})


class GatewayError(Exception):
    """Mixin of every gateway error: which provider, and the HTTP/SMTP status if any."""

    provider: str = ""
    status: int | None = None


class GatewayTransientError(TransientError, GatewayError):
    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(redact(f"{provider}: {message}"), retry_after=retry_after)
        self.provider, self.status = provider, status


class GatewayPermanentError(PermanentError, GatewayError):
    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(redact(f"{provider}: {message}"))
        self.provider, self.status = provider, status


class BadCredentials(GatewayPermanentError):
    """The provider refused our credentials: retrying with the same ones cannot help."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), clamped to
    [0, a day]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_SECONDS, max(0.0, seconds))


# When a platform's window resets: X sends epoch seconds (x-rate-limit-reset), Mastodon an
# ISO 8601 time (X-RateLimit-Reset), Bluesky epoch seconds (RateLimit-Reset).
RESET_HEADERS = ("x-rate-limit-reset", "x-ratelimit-reset", "ratelimit-reset")
_EPOCH_SECONDS = 1e9  # above this a reset is a time, below it a delay in seconds


def parse_reset(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds until a rate-limit window resets, from epoch seconds (or milliseconds), an
    ISO 8601 time or a delay; clamped to [0, a day]; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    now = now or datetime.now(UTC)
    try:
        number = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    else:
        if number != number:  # NaN
            return None
        if number > _EPOCH_SECONDS * 1000:
            number /= 1000.0
        seconds = number - now.timestamp() if number > _EPOCH_SECONDS else number
    return min(MAX_RETRY_AFTER_SECONDS, max(0.0, seconds))


def retry_after_from_headers(
    headers: Mapping[str, str], now: datetime | None = None
) -> float | None:
    """How long a platform asks us to wait: Retry-After first, else its reset header."""
    lowered = {k.lower(): v for k, v in headers.items()}
    found = parse_retry_after(lowered.get("retry-after"), now)
    if found is not None:
        return found
    for name in RESET_HEADERS:
        found = parse_reset(lowered.get(name), now)
        if found is not None:
            return found
    return None


def provider_message(body: bytes | str, limit: int = MAX_DETAIL_CHARS) -> str:
    """The useful part of an error body: a JSON error's message, else the text, shortened."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text.strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        error = document.get("error", document)
        if isinstance(error, dict):
            found = error.get("message") or error.get("detail") or error.get("error")
            if found:
                text = str(found)
        elif isinstance(error, str):
            text = error
        elif document.get("message"):
            text = str(document["message"])
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def error_for_status(
    provider: str,
    status: int,
    body: bytes | str = b"",
    retry_after: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> GatewayTransientError | GatewayPermanentError:
    """The exception a non-2xx HTTP answer stands for. With ``headers``, a platform's
    rate-limit reset header counts when there is no Retry-After."""
    message = provider_message(body)
    described = f"HTTP {status}" + (f": {message}" if message else "")
    if is_transient_status(status):
        wait = parse_retry_after(retry_after)
        if wait is None and headers is not None:
            wait = retry_after_from_headers(headers)
        return GatewayTransientError(provider, described, status=status, retry_after=wait)
    if status in CREDENTIAL_STATUSES:
        return BadCredentials(provider, f"credentials refused ({described})", status=status)
    return GatewayPermanentError(provider, described, status=status)


def error_for_smtp_code(
    provider: str, code: int, message: bytes | str
) -> GatewayTransientError | GatewayPermanentError:
    """SMTP reply codes: 4xx is "try again later", 5xx is final; 530/534/535 mean the
    credentials (or their absence) were refused."""
    text = provider_message(message)
    described = f"SMTP {code}" + (f": {text}" if text else "")
    if 400 <= code < 500:
        return GatewayTransientError(provider, described, status=code)
    if code in (530, 534, 535):
        return BadCredentials(provider, f"credentials refused ({described})", status=code)
    if code >= 500:
        return GatewayPermanentError(provider, described, status=code)
    # Anything else (a garbled or unexpected reply) may clear up on a new connection.
    return GatewayTransientError(provider, f"unexpected reply: {described}", status=code)
