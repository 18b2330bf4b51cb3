"""Lead webhooks: verify the signature, then enqueue CAMPAIGN_CAPTURE_LEADS by event id.

A request is signed Stripe-style. The sender computes
``HMAC-SHA256(secret, f"{timestamp}.{raw body}")`` and sends
``X-Aicmo-Signature: t=<unix seconds>,v1=<hex digest>`` (several ``v1=`` are allowed while
a secret is rotated). A signature is compared in constant time; a timestamp further than
``AICMO_CAM_WEBHOOK_TOLERANCE_SECONDS`` from now is refused, so a captured request cannot be
replayed later, and within the window the event id makes a replay a no-op.

Body: ``{"event_id": "...", "campaign_id": 1, "leads": [{...}, ...]}``.

``receive`` raises a :class:`WebhookError` (with an HTTP status for the web layer) and
enqueues nothing when anything is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy.orm import Session

from aicmo.cam.errors import CampaignError
from aicmo.cam.leads import MAX_LEADS_PER_CAPTURE, SOURCE_PATTERN, enqueue_capture
from aicmo.cam.models import Campaign
from aicmo.config import get_settings
from aicmo.db import session_scope
from aicmo.orchestration.errors import EnqueueError, IdempotencyConflict
from aicmo.orchestration.queue import format_validation_error

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-aicmo-signature"


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


class DuplicateEvent(WebhookError):
    """The event id was already used with a different body."""

    status_code = 409


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ]
    campaign_id: int = Field(gt=0)
    leads: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_LEADS_PER_CAPTURE)


@dataclass(frozen=True)
class WebhookReceipt:
    action_id: int
    idempotency_key: str
    created: bool  # False: this event was already received


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value a sender puts in ``X-Aicmo-Signature`` (tests, client libraries)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_signature(
    secret: str, body: bytes, header: str | None, now: float, tolerance: float
) -> None:
    """Raise :class:`BadSignature` unless ``header`` signs ``body`` within the tolerance."""
    if not header:
        raise BadSignature("missing X-Aicmo-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise BadSignature("malformed signature timestamp") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise BadSignature("malformed X-Aicmo-Signature header (want t=...,v1=...)")
    if abs(now - timestamp) > tolerance:
        raise BadSignature(
            f"signature timestamp is {abs(now - timestamp):.0f}s away from now "
            f"(tolerance {tolerance:g}s): refused as a possible replay"
        )
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    digest = expected.hexdigest()
    # Compare every candidate (no early exit): timing says nothing about which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise BadSignature("signature does not match")


def parse_event(body: bytes) -> WebhookEvent:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"body is not UTF-8 JSON: {exc}") from None
    try:
        return WebhookEvent.model_validate(document)
    except ValidationError as exc:
        raise BadPayload("invalid event: " + "; ".join(format_validation_error(exc))) from None


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
        raise UnknownSource(f"unknown webhook source {source!r}")
    secret = settings.cam_webhook_secrets.get(source)
    if secret is None:
        raise UnknownSource(f"no secret is configured for webhook source {source!r}")
    if not isinstance(raw_body, bytes | bytearray):
        raise BadPayload("the raw body must be bytes (verify before parsing)")
    body = bytes(raw_body)
    if len(body) > settings.cam_webhook_max_bytes:
        raise BodyTooLarge(
            f"body is {len(body)} bytes, over the limit of {settings.cam_webhook_max_bytes}"
        )
    verify_signature(
        secret.get_secret_value(),
        body,
        _header(headers, SIGNATURE_HEADER),
        time.time() if now is None else now,
        settings.cam_webhook_tolerance_seconds,
    )
    event = parse_event(body)
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
        raise BadPayload(str(exc)) from exc
    log.info(
        "webhook %s event %s -> action %s%s",
        source,
        event.event_id,
        enqueued.action_id,
        "" if enqueued.created else " (already received)",
        extra={"action_id": enqueued.action_id, "campaign_id": event.campaign_id},
    )
    return WebhookReceipt(enqueued.action_id, enqueued.idempotency_key, enqueued.created)
