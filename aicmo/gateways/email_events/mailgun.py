"""Mailgun webhooks: the signature is in the JSON body,
``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``, where
signature = hex HMAC-SHA256(signing key, timestamp + token). The timestamp must be within the
tolerance; the event id (``event-data.id``) makes a replay inside it a no-op.
"""

from __future__ import annotations

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
    from_unix,
    parse_json,
    require_dict,
    sub,
    text,
    unix_header,
)


def sign(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def verify(body: bytes, headers: Mapping[str, str], now: float) -> list[ProviderEvent]:
    settings = get_settings()
    if settings.email_mailgun_signing_key is None:
        raise ProviderUnconfigured("no AICMO_EMAIL_MAILGUN_SIGNING_KEY: Mailgun events are refused")
    document = require_dict(parse_json(body), "the body")
    block = document.get("signature")
    if not isinstance(block, dict):
        raise BadEventSignature("no signature block in the body")
    timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
    if not all(isinstance(v, str) and 0 < len(v) <= 200 for v in (timestamp, token, signature)):
        raise BadEventSignature("malformed signature block")
    assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(signature, str)
    unix_header(timestamp, now, settings.email_events_tolerance_seconds, "signature.timestamp")
    expected = sign(settings.email_mailgun_signing_key.get_secret_value(), timestamp, token)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise BadEventSignature("Mailgun signature does not match")
    return [_event(require_dict(document.get("event-data"), "event-data"))]


def _event(data: dict[str, Any]) -> ProviderEvent:
    name = data.get("event")
    event_id = text(data.get("id"), 200)
    if not isinstance(name, str) or not event_id:
        raise BadEventPayload("event-data needs an event and an id")
    kind = {
        "delivered": "delivered",
        "opened": "open",
        "clicked": "click",
        "complained": "complaint",
        "unsubscribed": "unsubscribe",
    }.get(name, "other")
    if name == "failed":
        kind = "bounce_hard" if data.get("severity") == "permanent" else "bounce_soft"
    message = sub(data, "message")
    message_headers = sub(message, "headers")
    return ProviderEvent(
        provider="mailgun",
        event_id=event_id,
        kind=kind,
        occurred_at=from_unix(data.get("timestamp")),
        message_ref=text(message_headers.get("message-id")),
        recipient=text(data.get("recipient"), 320),
        url=text(data.get("url"), 4000),
        detail={"event": name[:100], "severity": text(data.get("severity"), 40)},
    )
