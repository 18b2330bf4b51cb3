"""Classification of provider answers, Retry-After parsing, the limiter's waiting rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from aicmo.gateways.errors import (
    MAX_RETRY_AFTER_SECONDS,
    BadCredentials,
    GatewayPermanentError,
    GatewayTransientError,
    error_for_smtp_code,
    error_for_status,
    parse_retry_after,
    provider_message,
)
from aicmo.orchestration.errors import PermanentError, TransientError
from aicmo.orchestration.redaction import register_secret
from aicmo.ratelimit import Bucket, FileCounterStore, RateLimited, RateLimiter

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        ("999999999", MAX_RETRY_AFTER_SECONDS),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (408, GatewayTransientError),
        (425, GatewayTransientError),
        (429, GatewayTransientError),
        (500, GatewayTransientError),
        (502, GatewayTransientError),
        (503, GatewayTransientError),
        (400, GatewayPermanentError),
        (404, GatewayPermanentError),
        (422, GatewayPermanentError),
        (401, BadCredentials),
        (403, BadCredentials),
    ],
)
def test_http_status_classes(status: int, kind: type[Exception]) -> None:
    error = error_for_status("hook", status, b'{"error": {"message": "nope"}}', "12")
    assert type(error) is kind
    assert isinstance(error, TransientError if kind is GatewayTransientError else PermanentError)
    assert f"HTTP {status}: nope" in str(error)
    assert getattr(error, "retry_after", None) == (12.0 if kind is GatewayTransientError else None)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (421, GatewayTransientError),
        (450, GatewayTransientError),
        (451, GatewayTransientError),
        (452, GatewayTransientError),
        (535, BadCredentials),
        (530, BadCredentials),
        (550, GatewayPermanentError),
        (554, GatewayPermanentError),
        (250, GatewayTransientError),
    ],
)
def test_smtp_code_classes(code: int, kind: type[Exception]) -> None:
    assert type(error_for_smtp_code("smtp", code, b"text")) is kind


def test_provider_messages_are_short_and_redacted() -> None:
    register_secret("s3cr3t-value-xyz")
    assert provider_message('{"message": "bad"}') == "bad"
    assert provider_message('{"error": "quota"}') == "quota"
    assert provider_message("<html>\n  oops </html>") == "<html> oops </html>"
    assert len(provider_message("x" * 5000)) == 503
    error = error_for_status("hook", 401, b'{"error": {"message": "key s3cr3t-value-xyz"}}')
    assert "s3cr3t-value-xyz" not in str(error) and "key ***" in str(error)


def test_limiter_waits_when_the_wait_fits_and_refuses_when_it_does_not(tmp_path: Path) -> None:
    clock = [1000.0]
    store = FileCounterStore(tmp_path / "b.json", clock=lambda: clock[0])
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(store, max_wait=2.0, sleep=sleep, clock=lambda: clock[0])
    bucket = Bucket("b", per_minute=60, burst=1)
    assert limiter.acquire([(bucket, 1)]) == 0
    waited = limiter.acquire([(bucket, 1)])  # one token a second: wait about 1 s
    assert 1.0 <= waited <= 1.1 and slept
    with pytest.raises(RateLimited) as raised:
        limiter.acquire([(bucket, 1)], max_wait=0.5)
    assert raised.value.retry_after == pytest.approx(1.0, abs=0.06)
    assert isinstance(raised.value, TransientError)


def test_bucket_validation() -> None:
    with pytest.raises(ValueError, match="positive"):
        Bucket("x", per_minute=0, burst=1)
