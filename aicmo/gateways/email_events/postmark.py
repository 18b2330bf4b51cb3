"""Postmark webhooks: no signature; the webhook URL carries HTTP basic auth
(``https://user:password@host/webhooks/email/postmark``), checked in constant time.
Body: one event, ``RecordType`` Bounce / SpamComplaint / Delivery / Open / Click /
SubscriptionChange. A replay is a no-op by the event id (the bounce ``ID``, else the
record type, ``MessageID`` and the event's own time).
"""

from __future__ import annotations

import base64
import binascii
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
)

SOFT = {"SoftBounce", "Transient", "DnsError", "AutoResponder"}
HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "Blocked"}
TIME_FIELD = {
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Delivery": "DeliveredAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


def verify(body: bytes, headers: Mapping[str, str], now: float) -> list[ProviderEvent]:
    settings = get_settings()
    if settings.email_postmark_username is None or settings.email_postmark_password is None:
        raise ProviderUnconfigured("no AICMO_EMAIL_POSTMARK_USERNAME/PASSWORD: events refused")
    given = header(headers, "authorization") or ""
    scheme, _, encoded = given.partition(" ")
    try:
        decoded = base64.b64decode(encoded, validate=True) if scheme.lower() == "basic" else b""
    except (binascii.Error, ValueError):
        decoded = b""
    expected = (
        f"{settings.email_postmark_username}:{settings.email_postmark_password.get_secret_value()}"
    ).encode()
    if not hmac.compare_digest(expected, decoded):
        raise BadEventSignature("wrong or missing basic auth")
    return [_event(require_dict(parse_json(body), "the event"))]


def _event(data: dict[str, Any]) -> ProviderEvent:
    record = data.get("RecordType")
    if not isinstance(record, str):
        raise BadEventPayload("the event has no RecordType")
    raw_type = data.get("Type")
    bounce_type = raw_type if isinstance(raw_type, str) else ""
    if record == "Bounce":
        kind = (
            "bounce_hard"
            if bounce_type in HARD
            else "bounce_soft"
            if bounce_type in SOFT
            else "other"
        )
        if bounce_type == "SpamComplaint":
            kind = "complaint"
    elif record == "SubscriptionChange":
        kind = "unsubscribe" if data.get("SuppressSending") is True else "other"
    else:
        kind = {
            "SpamComplaint": "complaint",
            "Delivery": "delivered",
            "Open": "open",
            "Click": "click",
        }.get(record, "other")
    stamp_field = TIME_FIELD.get(record, "ReceivedAt")
    occurred = from_iso(data.get(stamp_field))
    message_id = text(data.get("MessageID"))
    event_id = text(data.get("ID"), 200) if record in ("Bounce", "SpamComplaint") else None
    if not event_id:
        if not message_id:
            raise BadEventPayload("the event has neither ID nor MessageID")
        event_id = f"{record}:{message_id}:{occurred.isoformat()}"[:200]
    else:
        event_id = f"{record}:{event_id}"
    metadata = sub(data, "Metadata")
    return ProviderEvent(
        provider="postmark",
        event_id=event_id,
        kind=kind,
        occurred_at=occurred,
        message_ref=text(metadata.get("message-id")),
        provider_message_id=message_id,
        recipient=text(data.get("Email") or data.get("Recipient"), 320),
        url=text(data.get("OriginalLink"), 4000),
        detail={"record": record[:60], "type": bounce_type[:60] or None},
    )
