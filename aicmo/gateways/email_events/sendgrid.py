"""SendGrid Event Webhook: ``X-Twilio-Email-Event-Webhook-Signature`` is a base64 DER ECDSA
(P-256, SHA-256) signature of ``timestamp + raw body``, with
``X-Twilio-Email-Event-Webhook-Timestamp``; the verification key (base64 DER
SubjectPublicKeyInfo, as the dashboard shows it, or PEM) is ``AICMO_EMAIL_SENDGRID_PUBLIC_KEY``.
Body: a JSON array of events, each with its ``sg_event_id``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aicmo.config import get_settings
from aicmo.gateways.email_events.base import (
    MAX_EVENTS,
    BadEventPayload,
    BadEventSignature,
    ProviderEvent,
    ProviderUnconfigured,
    from_unix,
    header,
    parse_json,
    text,
    unix_header,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
KINDS = {
    "delivered": "delivered",
    "open": "open",
    "click": "click",
    "spamreport": "complaint",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
}


@lru_cache(maxsize=4)
def _key(text_key: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in text_key:
            key = serialization.load_pem_public_key(text_key.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text_key))
    except (ValueError, binascii.Error) as exc:
        raise ProviderUnconfigured(f"AICMO_EMAIL_SENDGRID_PUBLIC_KEY is not a key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ProviderUnconfigured("AICMO_EMAIL_SENDGRID_PUBLIC_KEY is not an EC key")
    return key


def verify(body: bytes, headers: Mapping[str, str], now: float) -> list[ProviderEvent]:
    settings = get_settings()
    if not settings.email_sendgrid_public_key:
        raise ProviderUnconfigured("no AICMO_EMAIL_SENDGRID_PUBLIC_KEY: SendGrid events refused")
    key = _key(settings.email_sendgrid_public_key)
    stamp = header(headers, TIMESTAMP_HEADER)
    unix_header(stamp, now, settings.email_events_tolerance_seconds, TIMESTAMP_HEADER)
    assert stamp is not None
    signature = header(headers, SIGNATURE_HEADER)
    if not signature or len(signature) > 512:
        raise BadEventSignature(f"missing {SIGNATURE_HEADER}")
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            stamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise BadEventSignature("SendGrid signature does not verify") from None
    events = parse_json(body)
    if not isinstance(events, list) or not 0 < len(events) <= MAX_EVENTS:
        raise BadEventPayload(f"the body is not a JSON array of 1 to {MAX_EVENTS} events")
    return [_event(item) for item in events]


def _event(item: Any) -> ProviderEvent:
    if not isinstance(item, dict):
        raise BadEventPayload("an event is not a JSON object")
    name = item.get("event")
    event_id = text(item.get("sg_event_id"), 200)
    if not isinstance(name, str) or not event_id:
        raise BadEventPayload("an event needs event and sg_event_id")
    kind = KINDS.get(name, "other")
    if name == "bounce":
        # "blocked" is a refusal of this message (soft); "bounce" is the address (hard).
        kind = "bounce_soft" if item.get("type") == "blocked" else "bounce_hard"
    provider_id = text(item.get("sg_message_id"))
    return ProviderEvent(
        provider="sendgrid",
        event_id=event_id,
        kind=kind,
        occurred_at=from_unix(item.get("timestamp")),
        message_ref=text(item.get("smtp-id")),
        provider_message_id=provider_id.split(".")[0] if provider_id else None,
        recipient=text(item.get("email"), 320),
        url=text(item.get("url"), 4000),
        detail={"event": name[:60], "type": text(item.get("type"), 60)},
    )
