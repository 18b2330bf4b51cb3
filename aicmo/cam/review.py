"""The human review gate: list drafts, approve them (which queues their publish), reject them.

Every decision works in the caller's transaction. Approving queues the message's
CAMPAIGN_PUBLISH at once when the campaign is ACTIVE and has room under today's limit;
otherwise the message stays APPROVED and the next tick queues it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicmo.cam.campaigns import get_campaign
from aicmo.cam.errors import MessageNotFound, ReviewError
from aicmo.cam.models import Campaign, Lead, OutreachMessage, PublishStatus
from aicmo.cam.publishing import queue_approved
from aicmo.db import utcnow
from aicmo.orchestration import manager
from aicmo.orchestration.errors import InvalidTransition

log = logging.getLogger(__name__)

MAX_REVIEWER_LENGTH = 128


@dataclass(frozen=True)
class ReviewResult:
    message_id: int
    publish_status: str
    queued: bool  # a CAMPAIGN_PUBLISH action is on its way
    publish_action_id: int | None


@dataclass(frozen=True)
class MessageView:
    id: int
    campaign_id: int
    lead_id: int
    lead: str
    step: int
    channel: str
    subject: str | None
    body: str
    publish_status: str
    generated_by: str
    reviewer: str | None
    created_at_utc: datetime
    published_at_utc: datetime | None
    error: str | None


def _reviewer(reviewer: str) -> str:
    name = (reviewer or "").strip()
    if not name or len(name) > MAX_REVIEWER_LENGTH:
        raise ReviewError(f"reviewer must be 1 to {MAX_REVIEWER_LENGTH} characters")
    return name


def _message(session: Session, message_id: int) -> OutreachMessage:
    found = session.scalars(
        select(OutreachMessage)
        .where(OutreachMessage.id == message_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if found is None:
        raise MessageNotFound(message_id)
    return found


def _result(message: OutreachMessage) -> ReviewResult:
    return ReviewResult(
        message.id,
        message.publish_status,
        message.publish_status == PublishStatus.QUEUED,
        message.publish_action_id,
    )


def approve(
    session: Session, message_id: int, reviewer: str, note: str | None = None
) -> ReviewResult:
    """DRAFT -> APPROVED, then queue its publish if the campaign can send now.

    Approving an APPROVED, QUEUED or PUBLISHED message again changes nothing.
    """
    who = _reviewer(reviewer)
    # The campaign's row lock first, as the tick takes it: never the other way round.
    probe = session.scalar(
        select(OutreachMessage.campaign_id).where(OutreachMessage.id == message_id)
    )
    if probe is None:
        raise MessageNotFound(message_id)
    get_campaign(session, probe, lock=True)
    message = _message(session, message_id)
    status = message.publish_status
    if status in (PublishStatus.APPROVED, PublishStatus.QUEUED, PublishStatus.PUBLISHED):
        if status == PublishStatus.APPROVED:
            queue_approved(session, message.campaign_id, utcnow(), [message.id])
            session.refresh(message)
        return _result(message)
    if status != PublishStatus.DRAFT:
        raise ReviewError(f"message {message_id} is {status}; only DRAFT messages can be approved")
    now = utcnow()
    message.publish_status = PublishStatus.APPROVED
    message.reviewer = who
    message.review_note = note
    message.approved_at_utc = now
    message.updated_at_utc = now
    session.flush()
    queue_approved(session, message.campaign_id, now, [message.id])
    session.refresh(message)
    log.info(
        "message %s approved by %s (%s)",
        message_id,
        who,
        message.publish_status,
        extra={"campaign_id": message.campaign_id, "message_id": message_id},
    )
    return _result(message)


def lock_in_order(session: Session, message_ids: Sequence[int], campaigns: bool = True) -> None:
    """Take the row locks a batch of decisions needs up front, in one global order: the
    campaigns (``ORDER BY id``), then the messages (``ORDER BY id``). Two callers deciding on
    overlapping messages of several campaigns, in any order, then wait for each other
    instead of each holding what the other needs next (a deadlock)."""
    ids = sorted(set(message_ids))
    if not ids:
        return
    if campaigns:
        owners = select(OutreachMessage.campaign_id).where(OutreachMessage.id.in_(ids))
        session.execute(
            select(Campaign.id)
            .where(Campaign.id.in_(owners))
            .order_by(Campaign.id)
            .with_for_update()
        ).all()
    session.execute(
        select(OutreachMessage.id)
        .where(OutreachMessage.id.in_(ids))
        .order_by(OutreachMessage.id)
        .with_for_update()
    ).all()


def approve_many(
    session: Session, message_ids: Sequence[int], reviewer: str, note: str | None = None
) -> list[ReviewResult]:
    """:func:`approve` for each message, in the order given, with every lock taken first
    in the global order (:func:`lock_in_order`)."""
    lock_in_order(session, message_ids)
    return [approve(session, message_id, reviewer, note) for message_id in message_ids]


def reject(
    session: Session, message_id: int, reviewer: str, reason: str | None = None
) -> ReviewResult:
    """DRAFT/APPROVED/QUEUED -> REJECTED: it will never be sent.

    A QUEUED message's publish action is cancelled if it has not started; if it has, the
    review gate stops it (it publishes only APPROVED messages). The lead leaves the automated
    flow (``requires_human_review``) until a person decides what comes next
    (``leads.set_review_flag(session, lead_id, False)``).
    """
    who = _reviewer(reviewer)
    message = _message(session, message_id)
    status = message.publish_status
    if status == PublishStatus.REJECTED:
        return _result(message)
    if status not in (PublishStatus.DRAFT, PublishStatus.APPROVED, PublishStatus.QUEUED):
        raise ReviewError(
            f"message {message_id} is {status}; only DRAFT, APPROVED or QUEUED messages "
            "can be rejected"
        )
    now = utcnow()
    if status == PublishStatus.QUEUED and message.publish_action_id is not None:
        # Already running or finished: the gate refuses a REJECTED message anyway.
        with contextlib.suppress(InvalidTransition):
            manager.cancel(session, message.publish_action_id, by=f"reviewer:{who}")
    message.publish_status = PublishStatus.REJECTED
    message.reviewer = who
    message.review_note = reason
    message.rejected_at_utc = now
    message.updated_at_utc = now
    lead = session.get(Lead, message.lead_id, with_for_update=True)
    if lead is not None:
        lead.requires_human_review = True
        lead.updated_at_utc = now
    session.flush()
    log.info(
        "message %s rejected by %s",
        message_id,
        who,
        extra={"campaign_id": message.campaign_id, "message_id": message_id},
    )
    return _result(message)


def reject_many(
    session: Session, message_ids: Sequence[int], reviewer: str, reason: str | None = None
) -> list[ReviewResult]:
    """:func:`reject` for each message, the messages' locks taken first in id order."""
    lock_in_order(session, message_ids, campaigns=False)
    return [reject(session, message_id, reviewer, reason) for message_id in message_ids]


def list_messages(
    session: Session,
    campaign_id: int | None = None,
    status: PublishStatus | str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[MessageView]:
    """Messages for review screens and the CLI, oldest first."""
    query = select(OutreachMessage, Lead).join(Lead, Lead.id == OutreachMessage.lead_id)
    if campaign_id is not None:
        query = query.where(OutreachMessage.campaign_id == campaign_id)
    if status is not None:
        query = query.where(OutreachMessage.publish_status == PublishStatus(status))
    rows = session.execute(
        query.order_by(OutreachMessage.id).limit(max(1, min(limit, 10_000))).offset(offset)
    ).all()
    return [
        MessageView(
            id=m.id,
            campaign_id=m.campaign_id,
            lead_id=m.lead_id,
            lead=lead.display_name,
            step=m.step,
            channel=m.channel,
            subject=m.subject,
            body=m.body,
            publish_status=m.publish_status,
            generated_by=m.generated_by,
            reviewer=m.reviewer,
            created_at_utc=m.created_at_utc,
            published_at_utc=m.published_at_utc,
            error=m.error,
        )
        for m, lead in rows
    ]
