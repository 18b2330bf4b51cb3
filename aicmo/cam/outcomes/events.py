"""Provider events (bounce, complaint, delivery, open, click, unsubscribe) applied to the
message they name.

A webhook turns each verified provider event into an EMAIL_EVENT action keyed
``email_event:{provider}:{event_id}`` (:func:`enqueue`), so a retried webhook is a no-op; the
action's handler (:func:`apply`) records the event once (unique provider + event id) and acts:

* hard bounce: the address is suppressed;
* complaint, or an unsubscribe the provider saw: suppressed and DNC in every campaign;
* soft bounce: counted; ``AICMO_EMAIL_SOFT_BOUNCE_LIMIT`` within
  ``AICMO_EMAIL_SOFT_BOUNCE_WINDOW_DAYS`` suppress the address;
* delivered / opened / clicked: counted (per message, and per campaign day in the metrics).

A complaint or hard bounce then checks the campaign's brakes in the same transaction.

The message is found by the Message-ID we set at send time (``external_id``), else by the
provider's own id recorded at send (``provider_message_id``), else as the latest email
published to the recipient.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from aicmo.cam.campaigns import EMAIL
from aicmo.cam.leads import normalise_email
from aicmo.cam.models import Lead, OutreachMessage
from aicmo.cam.outcomes import brakes
from aicmo.cam.outcomes.addresses import stop_address
from aicmo.cam.outcomes.models import EmailEvent, EventKind
from aicmo.cam.outcomes.record import record_event
from aicmo.config import get_settings
from aicmo.orchestration.queue import ActionQueue, Enqueued

log = logging.getLogger(__name__)

ACTION_TYPE = "EMAIL_EVENT"
PROVIDER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
Text = Annotated[str, StringConstraints(max_length=1000)]


class EmailEventPayload(BaseModel):
    """One provider event, normalised by its verifier (aicmo.gateways.email_events)."""

    model_config = ConfigDict(extra="forbid")

    provider: Annotated[str, StringConstraints(pattern=PROVIDER_PATTERN)]
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    kind: EventKind
    occurred_at: AwareDatetime
    message_ref: Annotated[str, StringConstraints(max_length=500)] | None = None
    provider_message_id: Annotated[str, StringConstraints(max_length=500)] | None = None
    recipient: Annotated[str, StringConstraints(max_length=320)] | None = None
    url: Annotated[str, StringConstraints(max_length=4000)] | None = None
    detail: dict[str, Text | int | float | bool | None] = Field(default_factory=dict)


def event_key(provider: str, event_id: str) -> str:
    return f"email_event:{provider}:{event_id}"


def enqueue(session: Session, events: list[EmailEventPayload]) -> list[Enqueued]:
    """One EMAIL_EVENT action per event, in the caller's transaction (idempotent by key)."""
    if not events:
        return []
    return ActionQueue.enqueue_many(
        session,
        [
            (ACTION_TYPE, event.model_dump(mode="json"), event_key(event.provider, event.event_id))
            for event in events
        ],
    )


def _refs(ref: str) -> list[str]:
    bare = ref.strip().strip("<>")
    return [f"<{bare}>", bare]


def find_message(session: Session, event: EmailEventPayload) -> OutreachMessage | None:
    if event.message_ref:
        found = session.scalars(
            select(OutreachMessage)
            .where(OutreachMessage.external_id.in_(_refs(event.message_ref)))
            .limit(1)
        ).first()
        if found is not None:
            return found
    if event.provider_message_id:
        found = session.scalars(
            select(OutreachMessage)
            .where(
                or_(
                    OutreachMessage.provider_message_id == event.provider_message_id,
                    OutreachMessage.external_id.in_(_refs(event.provider_message_id)),
                )
            )
            .limit(1)
        ).first()
        if found is not None:
            return found
    if event.recipient:
        try:
            address = normalise_email(event.recipient)
        except ValueError:
            return None
        return session.scalars(
            select(OutreachMessage)
            .join(Lead, Lead.id == OutreachMessage.lead_id)
            .where(
                Lead.email == address,
                OutreachMessage.channel == EMAIL,
                OutreachMessage.published_at_utc.is_not(None),
            )
            .order_by(OutreachMessage.published_at_utc.desc())
            .limit(1)
        ).first()
    return None


def _recipient(
    session: Session, event: EmailEventPayload, message: OutreachMessage | None
) -> str | None:
    if event.recipient:
        try:
            return normalise_email(event.recipient)
        except ValueError:
            pass
    if message is not None:
        lead = session.get(Lead, message.lead_id)
        if lead is not None and lead.email:
            return lead.email
    return None


def _soft_bounces(session: Session, address: str, since: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(EmailEvent)
            .where(
                EmailEvent.recipient == address,
                EmailEvent.kind == EventKind.BOUNCE_SOFT,
                EmailEvent.created_at_utc >= since,
            )
        )
        or 0
    )


def apply(session: Session, event: EmailEventPayload, now: datetime) -> dict[str, Any]:
    """Record the event once and act on it, in the caller's transaction."""
    message = find_message(session, event)
    address = _recipient(session, event, message)
    new = record_event(
        session,
        provider=event.provider,
        event_id=event.event_id,
        kind=event.kind,
        occurred_at=event.occurred_at,
        now=now,
        message_id=message.id if message else None,
        campaign_id=message.campaign_id if message else None,
        recipient=address,
        url=event.url,
        detail=dict(event.detail) or None,
    )
    result: dict[str, Any] = {
        "provider": event.provider,
        "event_id": event.event_id,
        "kind": event.kind.value,
        "message_id": message.id if message else None,
        "duplicate": not new,
    }
    if not new:
        return result
    effect = None
    kind = event.kind
    if address and kind is EventKind.BOUNCE_HARD:
        stop_address(session, address, f"hard bounce ({event.provider})", now, dnc=False)
        effect = "suppressed"
    elif address and kind in (EventKind.COMPLAINT, EventKind.UNSUBSCRIBE):
        stop_address(session, address, f"{kind.value} ({event.provider})", now)
        effect = "suppressed+dnc"
    elif address and kind is EventKind.BOUNCE_SOFT:
        settings = get_settings()
        since = now - timedelta(days=settings.email_soft_bounce_window_days)
        if _soft_bounces(session, address, since) >= settings.email_soft_bounce_limit:
            stop_address(
                session,
                address,
                f"{settings.email_soft_bounce_limit} soft bounces in "
                f"{settings.email_soft_bounce_window_days:g} days ({event.provider})",
                now,
                dnc=False,
            )
            effect = "suppressed"
    result["effect"] = effect
    if message is not None and kind in (EventKind.COMPLAINT, EventKind.BOUNCE_HARD):
        result["brake"] = brakes.check(session, message.campaign_id, now)
    session.flush()
    return result
