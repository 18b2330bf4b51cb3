"""From APPROVED to PUBLISHED: the daily limit, queueing CAMPAIGN_PUBLISH, the review gate.

Queueing reserves room under the daily limit: a message is queued only while
``published today + already queued < daily_send_limit``, and every decision to queue takes
the campaign's row lock, so a tick and a reviewer approving at the same time cannot both
take the last slot. The publish handler checks again before it sends (a backstop for
actions enqueued by hand).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aicmo.cam import keys
from aicmo.cam.campaigns import StepSpec, get_campaign
from aicmo.cam.clock import today_bounds
from aicmo.cam.errors import (
    CampaignHalted,
    DailyLimitReached,
    MessageNotFound,
    ReviewGateClosed,
)
from aicmo.cam.models import (
    OPEN_LEAD_STATUSES,
    Campaign,
    CampaignMode,
    Consent,
    Lead,
    LeadStatus,
    OutreachMessage,
    PublishStatus,
)
from aicmo.cam.suppressions import is_suppressed
from aicmo.config import get_settings
from aicmo.orchestration import manager
from aicmo.orchestration.errors import PermanentError
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.status import ActionStatus

log = logging.getLogger(__name__)

_GIVEN_UP = (ActionStatus.FAILED, ActionStatus.DLQ, ActionStatus.CANCELLED)


class LeadNotContactable(PermanentError):
    """The lead became DNC, suppressed, flagged or closed after its message was drafted."""


# -- the daily limit -----------------------------------------------------------------------


def published_today(session: Session, campaign: Campaign, now: datetime) -> int:
    """Messages really published in the campaign's current local day."""
    start, end = today_bounds(now, campaign.timezone)
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutreachMessage)
            .where(
                OutreachMessage.campaign_id == campaign.id,
                OutreachMessage.published_at_utc >= start,
                OutreachMessage.published_at_utc < end,
            )
        )
        or 0
    )


def in_flight(session: Session, campaign_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutreachMessage)
            .where(
                OutreachMessage.campaign_id == campaign_id,
                OutreachMessage.publish_status == PublishStatus.QUEUED,
            )
        )
        or 0
    )


def remaining_today(session: Session, campaign: Campaign, now: datetime) -> int:
    """How many more messages may be queued now without breaking today's limit."""
    used = published_today(session, campaign, now) + in_flight(session, campaign.id)
    return max(0, campaign.daily_send_limit - used)


# -- queueing ------------------------------------------------------------------------------


def reconcile_failed_publishes(session: Session, campaign_id: int, now: datetime) -> int:
    """QUEUED messages whose publish action gave up (FAILED, DLQ, CANCELLED) become FAILED.

    The handler cannot mark them itself: its writes roll back with the failure. Until this
    runs they count as in flight, which only errs towards sending less.
    """
    failed = session.execute(
        select(OutreachMessage.id, AOLAction.last_error, AOLAction.status)
        .join(AOLAction, AOLAction.id == OutreachMessage.publish_action_id)
        .where(
            OutreachMessage.campaign_id == campaign_id,
            OutreachMessage.publish_status == PublishStatus.QUEUED,
            AOLAction.status.in_(_GIVEN_UP),
        )
    ).all()
    for message_id, error, status in failed:
        session.execute(
            update(OutreachMessage)
            .where(
                OutreachMessage.id == message_id,
                OutreachMessage.publish_status == PublishStatus.QUEUED,
            )
            .values(
                publish_status=PublishStatus.FAILED,
                error=error or f"publish action {status}",
                failed_at_utc=now,
                updated_at_utc=now,
            )
            .execution_options(synchronize_session=False)
        )
    return len(failed)


def queue_approved(
    session: Session,
    campaign_id: int,
    now: datetime,
    message_ids: list[int] | None = None,
) -> list[int]:
    """Enqueue CAMPAIGN_PUBLISH (key ``cam_publish:{id}``) for APPROVED messages, oldest
    first, as far as today's limit allows; mark them QUEUED. In the caller's transaction,
    so the messages and their actions commit together. Returns the queued message ids."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.halted:
        return []
    room = remaining_today(session, campaign, now)
    if room <= 0:
        return []
    query = (
        select(OutreachMessage.id)
        .where(
            OutreachMessage.campaign_id == campaign_id,
            OutreachMessage.publish_status == PublishStatus.APPROVED,
        )
        .order_by(OutreachMessage.id)
        .limit(room)
        # A reviewer rejecting one of these waits for us, or we skip it once rejected.
        .with_for_update()
    )
    if message_ids is not None:
        query = query.where(OutreachMessage.id.in_(message_ids))
    ids = list(session.scalars(query))
    if not ids:
        return []
    enqueued = ActionQueue.enqueue_many(
        session,
        [(keys.PUBLISH, {"message_id": mid}, keys.publish_key(mid)) for mid in ids],
    )
    # The key of a message is spent once used: an action that gave up earlier (e.g. a
    # publish forced on the DRAFT and refused by the gate) runs again, as a replay.
    spent = [
        item.action_id
        for item in enqueued
        if not item.created and item.status in (ActionStatus.FAILED, ActionStatus.DLQ)
    ]
    if spent:
        manager.replay_many(session, spent, by=f"campaign:{campaign_id}")
    for message_id, action in zip(ids, enqueued, strict=True):
        session.execute(
            update(OutreachMessage)
            .where(
                OutreachMessage.id == message_id,
                OutreachMessage.publish_status == PublishStatus.APPROVED,
            )
            .values(
                publish_status=PublishStatus.QUEUED,
                publish_action_id=action.action_id,
                queued_at_utc=now,
                updated_at_utc=now,
            )
            .execution_options(synchronize_session=False)
        )
    log.info(
        "campaign %s: queued %d message(s) for publishing",
        campaign_id,
        len(ids),
        extra={"campaign_id": campaign_id},
    )
    return ids


# -- publishing one message (the CAMPAIGN_PUBLISH handler's two halves) ----------------------


@dataclass(frozen=True)
class PublishJob:
    message: OutreachMessage
    lead: Lead
    campaign: Campaign
    from_address: str
    proof_mode: bool


def open_publish(
    session: Session, message_id: int, action_id: int, now: datetime, proof_mode: bool
) -> PublishJob:
    """Lock the message and check everything that must hold before sending.

    Raises :class:`ReviewGateClosed` unless the message is APPROVED (or QUEUED/FAILED by this
    very action, i.e. a retry or a replay), :class:`CampaignHalted`, :class:`LeadNotContactable`
    or :class:`DailyLimitReached` (transient: retried at the next local midnight).
    """
    message = session.scalars(
        select(OutreachMessage)
        .where(OutreachMessage.id == message_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if message is None:
        raise MessageNotFound(message_id)
    status = message.publish_status
    owned = message.publish_action_id == action_id
    if not (
        status == PublishStatus.APPROVED
        or (owned and status in (PublishStatus.QUEUED, PublishStatus.FAILED))
    ):
        detail = status
        if status == PublishStatus.QUEUED:
            detail = f"QUEUED by action {message.publish_action_id}"
        raise ReviewGateClosed(f"review gate: message {message_id} is {detail}")
    campaign = get_campaign(session, message.campaign_id)
    if campaign.halted:
        why = "its kill switch is on" if campaign.kill_switch else f"it is {campaign.status}"
        raise CampaignHalted(
            f"campaign {campaign.id} is halted ({why}): message {message_id} not sent"
        )
    lead = session.get(Lead, message.lead_id, populate_existing=True)
    assert lead is not None  # the foreign key guarantees it
    if lead.consent == Consent.DNC:
        raise LeadNotContactable(f"lead {lead.id} is DNC: message {message_id} not sent")
    if lead.requires_human_review:
        raise LeadNotContactable(
            f"lead {lead.id} is flagged for human review: message {message_id} not sent"
        )
    if lead.status not in OPEN_LEAD_STATUSES:
        raise LeadNotContactable(f"lead {lead.id} is {lead.status}: message {message_id} not sent")
    if lead.email and is_suppressed(session, lead.email):
        raise LeadNotContactable(
            f"lead {lead.id} is suppressed ({lead.email_domain}): message {message_id} not sent"
        )
    if published_today(session, campaign, now) >= campaign.daily_send_limit:
        _, day_end = today_bounds(now, campaign.timezone)
        wait = math.ceil((day_end - now).total_seconds()) + 1
        raise DailyLimitReached(
            f"campaign {campaign.id} published its daily limit of {campaign.daily_send_limit}",
            retry_after=wait,
        )
    return PublishJob(
        message=message,
        lead=lead,
        campaign=campaign,
        from_address=campaign.from_address or get_settings().cam_from_address,
        proof_mode=proof_mode or campaign.mode == CampaignMode.PROOF,
    )


def record_published(
    session: Session, job: PublishJob, external_id: str | None, action_id: int, now: datetime
) -> None:
    """PUBLISHED with its external id; the lead CONTACTED and due again after the step's wait."""
    message, lead = job.message, job.lead
    message.publish_status = PublishStatus.PUBLISHED
    message.external_id = external_id
    message.published_at_utc = now
    message.publish_action_id = action_id
    message.failed_at_utc = None
    message.error = None
    message.updated_at_utc = now
    steps = job.campaign.steps
    wait = 0.0
    if 1 <= message.step <= len(steps):
        wait = StepSpec.model_validate(steps[message.step - 1]).wait_minutes
    lead.status = LeadStatus.CONTACTED
    lead.last_contacted_at_utc = now
    # Only the message's own step moves the lead on (a late replay of an older step must not).
    if lead.step == message.step:
        lead.next_action_at_utc = now + timedelta(minutes=wait)
    lead.updated_at_utc = now
    session.flush()
