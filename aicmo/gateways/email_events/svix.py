"""Svix-signed senders (Resend and others): ``svix-id``, ``svix-timestamp`` and
``svix-signature: v1,<base64> [v1,<base64> ...]`` where each signature is
HMAC-SHA256(base64-decoded secret after ``whsec_``, ``f"{id}.{timestamp}.{body}"``).

The id is the event id (a resend keeps it: a replay is a no-op); the timestamp must be within
the tolerance. Body: Resend's ``{"type": "email.bounced", "created_at", "data": {...}}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from aicmo.config import get_settings
from aicmo.gateways.email_events.base import (
    BadEventPayload,
    BadEventSignature,
    ProviderEvent,
    ProviderUnconfigured,
    from_iso,
    header,
    parse_json,
    require_dict,
    sub,
    text,
    unix_header,
)

MAX_SIGNATURES = 8
KINDS = {
    "email.delivered": "delivered",
    "email.complained": "complaint",
    "email.opened": "open",
    "email.clicked": "click",
    "email.bounced": "bounce_hard",
    "email.delivery_delayed": "other",
    "email.sent": "other",
}


def secret_bytes(secret: str) -> bytes:
    raw = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
    return base64.b64decode(raw)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``svix-signature`` header value (tests, and documentation of the scheme)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(body: bytes, headers: Mapping[str, str], now: float) -> list[ProviderEvent]:
    settings = get_settings()
    secrets = [s.get_secret_value() for s in settings.email_svix_secrets]
    if not secrets:
        raise ProviderUnconfigured("no AICMO_EMAIL_SVIX_SECRETS: Svix events are refused")
    msg_id = header(headers, "svix-id") or header(headers, "webhook-id")
    stamp = header(headers, "svix-timestamp") or header(headers, "webhook-timestamp")
    signature = header(headers, "svix-signature") or header(headers, "webhook-signature")
    if not msg_id or len(msg_id) > 200 or not msg_id.isascii():
        raise BadEventSignature("missing or malformed svix-id")
    timestamp = unix_header(stamp, now, settings.email_events_tolerance_seconds, "svix-timestamp")
    if not signature or len(signature) > 4096:
        raise BadEventSignature("missing svix-signature")
    given: list[bytes] = []
    for part in signature.split(" ")[:MAX_SIGNATURES]:
        version, _, value = part.partition(",")
        if version != "v1":
            continue
        try:
            given.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise BadEventSignature("no v1 signature in svix-signature")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    matched = False
    for secret in secrets:
        try:
            key = secret_bytes(secret)
        except (binascii.Error, ValueError):
            continue
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for candidate in given:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise BadEventSignature("svix signature does not match")
    event = require_dict(parse_json(body), "the event")
    return [_event(msg_id, event)]


def _event(msg_id: str, event: dict[str, Any]) -> ProviderEvent:
    kind_name = event.get("type")
    if not isinstance(kind_name, str):
        raise BadEventPayload("the event has no type")
    data = require_dict(event.get("data", {}), "data")
    kind = KINDS.get(kind_name, "other")
    bounce = sub(data, "bounce")
    if kind == "bounce_hard" and str(bounce.get("type", "")).lower() in ("transient", "soft"):
        kind = "bounce_soft"
    to = data.get("to")
    recipient = text(to[0]) if isinstance(to, list) and to else text(to)
    click = sub(data, "click")
    headers = data.get("headers")
    message_ref = None
    if isinstance(headers, list):
        for item in headers:
            if isinstance(item, dict) and str(item.get("name", "")).lower() == "message-id":
                message_ref = text(item.get("value"))
    return ProviderEvent(
        provider="svix",
        event_id=msg_id,
        kind=kind,
        occurred_at=from_iso(event.get("created_at") or data.get("created_at")),
        message_ref=message_ref,
        provider_message_id=text(data.get("email_id")),
        recipient=recipient,
        url=text(click.get("link"), 4000),
        detail={"type": kind_name[:100]},
    )
