"""WebhookSocialPoster: POST the post as JSON to a configured URL per platform.

This is how teams reach Buffer, Zapier, Make or n8n. Every request carries the action's
idempotency key (``Idempotency-Key``) so the receiver can drop a retry it already handled, and,
when a secret is configured, an HMAC-SHA256 signature over ``"<timestamp>.<body>"``
(``X-Aicmo-Signature: t=<timestamp>,v1=<hex>``) so it can check the sender and refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from aicmo.gateways.errors import (
    GatewayPermanentError,
    GatewayTransientError,
    error_for_status,
)
from aicmo.gateways.http import send_with_deadline, shared_client
from aicmo.gateways.ports import SendResult, SocialPost
from aicmo.orchestration.redaction import register_secret
from aicmo.ratelimit import Bucket, RateLimiter

SIGNATURE_HEADER = "X-Aicmo-Signature"
# Shorter paths ("/", "/hook") carry no secret, and masking them would garble every log line.
MIN_HIDDEN_PATH = 12


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(
        secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """The receiver's side (and the tests'): constant-time compare, timestamp tolerance."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class WebhookSocialPoster:
    def __init__(
        self,
        platform: str,
        url: str,
        *,
        secret: str | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
        timeout: float = 20.0,
        limiter: RateLimiter | None = None,
        bucket: Bucket | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.platform = platform
        self._url = url
        self._secret = secret
        self._token = token
        for value in (url, secret, token):
            register_secret(value)
        # Receivers echo the path back in errors; in hook URLs the path is the token.
        parts = urlsplit(url)
        hidden = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(hidden) >= MIN_HIDDEN_PATH:
            register_secret(hidden)
        self.timeout = timeout
        self.client = client or shared_client("webhook", connect_timeout, timeout)
        self.limiter = limiter
        self.bucket = bucket
        # The URL is a secret (hook URLs embed tokens): name the platform, not the address.
        self.provider = f"webhook {platform}"

    def __repr__(self) -> str:
        return f"WebhookSocialPoster({self.platform})"

    def _request(self, post: SocialPost, idempotency_key: str) -> httpx.Request:
        body = json.dumps(
            {
                "platform": post.platform,
                "content": post.content,
                "audience": post.audience,
                "idempotency_key": idempotency_key,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, int(time.time()), body)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return self.client.build_request("POST", self._url, content=body, headers=headers)

    def post(self, post: SocialPost, idempotency_key: str) -> SendResult:
        if self.limiter is not None and self.bucket is not None:
            self.limiter.acquire([(self.bucket, 1)])
        # Built after the wait, so the signature's timestamp is the sending time.
        request = self._request(post, idempotency_key)
        try:
            response = send_with_deadline(self.client, request, self.timeout)
        except httpx.TimeoutException as exc:
            raise GatewayTransientError(
                self.provider, f"timed out after {self.timeout:g}s ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise GatewayTransientError(
                self.provider, f"network error: {type(exc).__name__}: {exc}"
            ) from None
        if response.is_redirect:
            raise GatewayPermanentError(
                self.provider,
                f"HTTP {response.status_code} redirect: fix the configured URL",
                status=response.status_code,
            )
        if not response.is_success:
            raise error_for_status(
                self.provider,
                response.status_code,
                response.content,
                response.headers.get("Retry-After"),
            )
        return SendResult(
            external_id=_external_id(response),
            detail=f"HTTP {response.status_code}",
            provider=self.provider,
        )


def _external_id(response: httpx.Response) -> str | None:
    """Receivers answer in many shapes; take the first id-like field, if any."""
    try:
        document: Any = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        for name in ("id", "external_id", "post_id", "request_id", "event_id"):
            value = document.get(name)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
    header = response.headers.get("X-Request-Id")
    return header or None
