"""The generic signed JSON form, for senders with no scheme of their own (or a relay).

``X-Aicmo-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret, f"{t}.email." + body)>``,
the lead webhooks' scheme bound to the source ``email``; several ``v2=`` while rotating.
Body: ``{"events": [{"id", "type", "timestamp", "message_id"?, "provider_message_id"?,
"recipient"?, "url"?}]}`` with ``type`` one of delivered, bounce_hard, bounce_soft, complaint,
unsubscribe, open, click, other.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from aicmo.config import get_settings
from aicmo.gateways.email_events.base import (
    KINDS,
    MAX_EVENTS,
    BadEventPayload,
    BadEventSignature,
    ProviderEvent,
    ProviderUnconfigured,
    from_unix,
    header,
    parse_json,
    require_dict,
    text,
    unix_header,
)

SOURCE = "email"
MAX_SIGNATURES = 8


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{SOURCE}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v2={digest.hexdigest()}"


def verify(body: bytes, headers: Mapping[str, str], now: float) -> list[ProviderEvent]:
    settings = get_settings()
    if settings.email_generic_secret is None:
        raise ProviderUnconfigured("no AICMO_EMAIL_GENERIC_SECRET: generic events refused")
    value = header(headers, "x-aicmo-signature") or ""
    if len(value) > 4096:
        raise BadEventSignature("X-Aicmo-Signature is too long")
    stamp: str | None = None
    candidates: list[str] = []
    for part in value.split(","):
        name, _, item = part.strip().partition("=")
        if name == "t":
            stamp = item
        elif name == "v2":
            candidates.append(item)
    timestamp = unix_header(stamp, now, settings.email_events_tolerance_seconds, "t=")
    if not candidates or len(candidates) > MAX_SIGNATURES:
        raise BadEventSignature("missing or too many v2= signatures")
    expected = sign(settings.email_generic_secret.get_secret_value(), body, timestamp)
    expected_hex = expected.partition("v2=")[2].encode()
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected_hex, candidate.encode("utf-8", "surrogatepass"))
    if not matched:
        raise BadEventSignature("signature does not match")
    events = require_dict(parse_json(body), "the body").get("events")
    if not isinstance(events, list) or not 0 < len(events) <= MAX_EVENTS:
        raise BadEventPayload(f"events must be a list of 1 to {MAX_EVENTS}")
    return [_event(item) for item in events]


def _event(item: Any) -> ProviderEvent:
    data = require_dict(item, "an event")
    kind, event_id = data.get("type"), text(data.get("id"), 200)
    if kind not in KINDS or not event_id:
        raise BadEventPayload(f"an event needs an id and a type among {', '.join(KINDS)}")
    return ProviderEvent(
        provider="generic",
        event_id=event_id,
        kind=str(kind),
        occurred_at=from_unix(data.get("timestamp")),
        message_ref=text(data.get("message_id")),
        provider_message_id=text(data.get("provider_message_id")),
        recipient=text(data.get("recipient"), 320),
        url=text(data.get("url"), 4000),
    )
