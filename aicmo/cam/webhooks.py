"""Lead webhooks: verify the signature, then enqueue CAMPAIGN_CAPTURE_LEADS by event id.

A request is signed Stripe-style, over the source it is posted to and its raw body. The sender
computes ``HMAC-SHA256(secret, f"{timestamp}.{source}." + raw body)`` and sends
``X-Aicmo-Signature: t=<unix seconds>,v2=<hex digest>`` (several ``v2=`` are allowed while
a secret is rotated); :func:`sign` builds that header. Signing the source means a delivery
signed for one source is worthless for another, even one that shares its secret. A signature
is compared in constant time; a timestamp further than ``AICMO_CAM_WEBHOOK_TOLERANCE_SECONDS``
from now is refused, so a captured request cannot be replayed later, and within the window the
event id makes a replay a no-op. A source may post only into the campaigns its entry of
``AICMO_CAM_WEBHOOK_SECRETS`` allows.

Body: ``{"event_id": "...", "campaign_id": 1, "leads": [{...}, ...]}``, at most
``AICMO_CAM_WEBHOOK_MAX_BYTES`` and :data:`MAX_JSON_DEPTH` levels deep.

``receive`` raises a :class:`WebhookError` (with an HTTP ``status_code``, always 4xx, and a
reason) and enqueues nothing when anything about the request is wrong, whatever its bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError
from sqlalchemy.orm import Session

from aicmo.cam.errors import CampaignError
from aicmo.cam.leads import MAX_LEADS_PER_CAPTURE, SOURCE_PATTERN, enqueue_capture
from aicmo.cam.models import Campaign
from aicmo.config import WebhookSource, get_settings
from aicmo.db import session_scope
from aicmo.json_nesting import nesting_depth
from aicmo.orchestration.errors import EnqueueError, IdempotencyConflict
from aicmo.orchestration.queue import format_validation_error

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-aicmo-signature"
SCHEME = "v2"
# An event, its leads list, a lead, and room for a lead's own attributes: a body nested deeper
# is refused before it is parsed (json would recurse until RecursionError).
MAX_JSON_DEPTH = 32
MAX_HEADER_CHARS = 4096
MAX_SIGNATURES = 8
MAX_INT_DIGITS = 20
MAX_REASON_CHARS = 600
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class WebhookError(CampaignError):
    status_code = 400


class UnknownSource(WebhookError):
    status_code = 404


class BadSignature(WebhookError):
    status_code = 401


class BodyTooLarge(WebhookError):
    status_code = 413


class BadPayload(WebhookError):
    status_code = 422


class SourceNotAllowed(WebhookError):
    """A genuine delivery from a source into a campaign its settings do not allow."""

    status_code = 403


class DuplicateEvent(WebhookError):
    """The event id was already used with a different body."""

    status_code = 409


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ]
    campaign_id: int = Field(gt=0, lt=2**63, strict=True)
    leads: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_LEADS_PER_CAPTURE)


@dataclass(frozen=True)
class WebhookReceipt:
    action_id: int
    idempotency_key: str
    created: bool  # False: this event was already received


def signed_material(source: str, body: bytes, timestamp: int) -> bytes:
    """What the HMAC covers: ``f"{timestamp}.{source}."`` followed by the raw body."""
    return f"{timestamp}.{source}.".encode() + body


def sign(secret: str, body: bytes, timestamp: int, *, source: str) -> str:
    """The header value a sender puts in ``X-Aicmo-Signature`` for a delivery to ``source``
    (tests, client libraries): the one way to build it."""
    digest = hmac.new(secret.encode(), signed_material(source, body, timestamp), hashlib.sha256)
    return f"t={timestamp},{SCHEME}={digest.hexdigest()}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    try:
        items = list(headers.items())
    except (AttributeError, TypeError):
        return None
    for key, value in items:
        if isinstance(key, str) and key.lower() == name:
            return value if isinstance(value, str) else None
    return None


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    now: float,
    tolerance: float,
    *,
    source: str,
) -> None:
    """Raise :class:`BadSignature` unless ``header`` signs ``source`` and ``body`` within the
    tolerance. Any header, however odd, is a refusal, never another exception."""
    if not secret:
        raise BadSignature("no secret to verify with")
    if not header or not isinstance(header, str):
        raise BadSignature("missing X-Aicmo-Signature header")
    if len(header) > MAX_HEADER_CHARS:
        raise BadSignature(f"X-Aicmo-Signature header is over {MAX_HEADER_CHARS} characters")
    timestamp: int | None = None
    candidates: list[str] = []
    old_scheme = False
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                raise BadSignature("malformed signature timestamp (want t=<unix seconds>)")
            timestamp = int(value)
        elif name == SCHEME:
            candidates.append(value)
        elif name == "v1":
            old_scheme = True
    if timestamp is not None and not candidates and old_scheme:
        raise BadSignature(
            "v1 signatures (without the source) are no longer accepted: sign "
            f'HMAC-SHA256(secret, "<t>.<source>." + body) and send t=<t>,{SCHEME}=<hex>'
        )
    if timestamp is None or not candidates:
        raise BadSignature(f"malformed X-Aicmo-Signature header (want t=...,{SCHEME}=...)")
    if len(candidates) > MAX_SIGNATURES:
        raise BadSignature(f"more than {MAX_SIGNATURES} signatures in one header")
    if abs(now - timestamp) > tolerance:
        raise BadSignature(
            f"signature timestamp is {abs(now - timestamp):.0f}s away from now "
            f"(tolerance {tolerance:g}s): refused as a possible replay"
        )
    expected = hmac.new(
        secret.encode(), signed_material(source, body, timestamp), hashlib.sha256
    ).hexdigest()
    # Compare every candidate (no early exit): timing says nothing about which one matched.
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(
            expected.encode(), candidate.encode("utf-8", "surrogatepass")
        )
    if not matched:
        raise BadSignature("signature does not match")


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def parse_event(body: bytes) -> WebhookEvent:
    if nesting_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadPayload(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = json.loads(
            body.decode("utf-8"),
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise BadPayload(_short(f"body is not UTF-8 JSON: {exc}")) from None
    try:
        return WebhookEvent.model_validate(document)
    except ValidationError as exc:
        raise BadPayload(
            _short("invalid event: " + "; ".join(format_validation_error(exc)))
        ) from None


def _source(found: object) -> WebhookSource | None:
    """The source's settings; a plain secret set directly (not through the environment) is a
    source allowed every campaign. An empty secret is no source at all."""
    if isinstance(found, str | SecretStr):
        found = WebhookSource(secret=SecretStr(found) if isinstance(found, str) else found)
    if not isinstance(found, WebhookSource) or not found.secret.get_secret_value().strip():
        return None
    return found


def receive(
    source: str,
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    session: Session | None = None,
    now: float | None = None,
) -> WebhookReceipt:
    """Verify and enqueue one webhook delivery.

    With ``session`` the action is written in the caller's transaction; without one, in a
    transaction of its own. The same event delivered again returns the existing action.
    """
    settings = get_settings()
    if not isinstance(source, str) or not _source_ok(source):
        shown = repr(source[:64]) if isinstance(source, str) else type(source).__name__
        raise UnknownSource(f"unknown webhook source {shown}")
    config = _source(settings.cam_webhook_secrets.get(source))
    if config is None:
        raise UnknownSource(f"no secret is configured for webhook source {source!r}")
    if not isinstance(raw_body, bytes | bytearray | memoryview):
        raise BadPayload("the raw body must be bytes (verify before parsing)")
    body = bytes(raw_body)
    if len(body) > settings.cam_webhook_max_bytes:
        raise BodyTooLarge(
            f"body is {len(body)} bytes, over the limit of {settings.cam_webhook_max_bytes}"
        )
    verify_signature(
        config.secret.get_secret_value(),
        body,
        _header(headers, SIGNATURE_HEADER),
        time.time() if now is None else now,
        settings.cam_webhook_tolerance_seconds,
        source=source,
    )
    event = parse_event(body)
    if not config.allows(event.campaign_id):
        raise SourceNotAllowed(
            f"webhook source {source!r} may not post leads into campaign {event.campaign_id}"
        )
    if session is not None:
        return _enqueue(session, source, event)
    with session_scope() as own:
        return _enqueue(own, source, event)


def _source_ok(source: str) -> bool:
    return re.fullmatch(SOURCE_PATTERN, source) is not None


def _enqueue(session: Session, source: str, event: WebhookEvent) -> WebhookReceipt:
    if session.get(Campaign, event.campaign_id) is None:
        raise BadPayload(f"campaign {event.campaign_id} does not exist")
    try:
        # enqueue_many's own SAVEPOINT leaves the caller's transaction intact on a conflict.
        enqueued = enqueue_capture(session, event.campaign_id, source, event.event_id, event.leads)
    except IdempotencyConflict as exc:
        raise DuplicateEvent(
            f"event {event.event_id!r} from {source!r} was already received with another body"
        ) from exc
    except EnqueueError as exc:
        raise BadPayload(_short(str(exc))) from exc
    log.info(
        "webhook %s event %s -> action %s%s",
        source,
        event.event_id,
        enqueued.action_id,
        "" if enqueued.created else " (already received)",
        extra={"action_id": enqueued.action_id, "campaign_id": event.campaign_id},
    )
    return WebhookReceipt(enqueued.action_id, enqueued.idempotency_key, enqueued.created)
