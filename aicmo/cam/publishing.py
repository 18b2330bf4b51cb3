"""From APPROVED to PUBLISHED: the daily limit, queueing CAMPAIGN_PUBLISH, the review gate.

Queueing reserves room under the daily limit: a message is queued only while
``published today + already queued < daily_send_limit``, and every decision to queue takes
the campaign's row lock, so a tick and a reviewer approving at the same time cannot both
take the last slot.

Publishing one message is three steps, and no transaction is open across the send:

1. :func:`begin_publish`, in a short transaction of its own: the review gate, the halt,
   the lead's contactability, whether the message can be built at all, and the admission
   under the daily limit. Admission takes the campaign's row lock and counts what was
   published today plus every send in progress, then reserves (``sending_at_utc``) in the
   same transaction, so concurrent publishes of one campaign (replays, hand-made actions,
   a retry) never exceed ``daily_send_limit``. A refusal that is final for the message is
   written here too: a halt hands the message back to APPROVED (it is queued again on
   resume, under a fresh key), a lead no longer contactable or a message that can never be
   built is FAILED at once.
2. The send (SMTP, HTTP), with no transaction.
3. :func:`record_published` in the transaction that records SUCCESS, or
   :func:`release_publish` when the send failed.

Lock order: the campaign row, then the message row, everywhere.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from aicmo.cam import admission, keys
from aicmo.cam.campaigns import EMAIL, StepSpec, get_campaign
from aicmo.cam.clock import today_bounds, zone
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
from aicmo.orchestration.dispatch import BULK_PRIORITY
from aicmo.orchestration.errors import PermanentError
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.status import ActionStatus

log = logging.getLogger(__name__)


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


def _used_today(session: Session, campaign: Campaign, now: datetime, pending: Any) -> int:
    """Published in the campaign's local day, or ``pending``, counted in ONE statement: a
    message moves from pending to published in one commit, and two statements could each
    miss it (the first before, the second after)."""
    start, end = today_bounds(now, campaign.timezone)
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutreachMessage)
            .where(
                OutreachMessage.campaign_id == campaign.id,
                or_(
                    and_(
                        OutreachMessage.published_at_utc >= start,
                        OutreachMessage.published_at_utc < end,
                    ),
                    pending,
                ),
            )
        )
        or 0
    )


def remaining_today(session: Session, campaign: Campaign, now: datetime) -> int:
    """How many more messages may be queued now without breaking today's limit: published
    today plus already queued."""
    queued = OutreachMessage.publish_status == PublishStatus.QUEUED
    return max(0, campaign.daily_send_limit - _used_today(session, campaign, now, queued))


# -- queueing ------------------------------------------------------------------------------


def _publish_key(message_id: int, previous_action: int | None) -> str:
    # A message handed back (a halt) or whose action was purged is queued again under a key
    # of its own: the previous action may still be recording its end, and must not be the
    # one that sends it.
    return keys.publish_key(message_id, after=previous_action)


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
        select(OutreachMessage.id, OutreachMessage.publish_action_id)
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
    rows = session.execute(query).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    items = [
        (keys.PUBLISH, {"message_id": row.id}, _publish_key(row.id, row.publish_action_id))
        for row in rows
    ]
    # Fairness: a campaign's first ``cam_fair_share`` messages in flight go at the normal
    # priority, the rest at the bulk one, so another campaign's next messages overtake a
    # large backlog instead of waiting behind it (see README "Fairness").
    normal = max(0, get_settings().cam_fair_share - in_flight(session, campaign_id))
    enqueued = ActionQueue.enqueue_many(session, items[:normal])
    if items[normal:]:
        enqueued += ActionQueue.enqueue_many(session, items[normal:], priority=BULK_PRIORITY)
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


# -- publishing one message (the CAMPAIGN_PUBLISH handler's three steps) ---------------------

# A line break in a header is a header injection: no email can ever be built with one.
_UNSAFE_HEADER = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


class MessageUnbuildable(PermanentError):
    """The message can never be built (e.g. its subject holds a line break): FAILED at once."""


@dataclass(frozen=True)
class PublishJob:
    """What the send needs, as plain values: usable with no session or transaction open."""

    message_id: int
    campaign_id: int
    campaign_name: str
    lead_id: int
    channel: str
    subject: str | None
    body: str
    email: str | None
    audience: str | None  # who a social post is addressed to
    from_address: str
    proof_mode: bool
    click_tracking: bool = False  # links rewritten through /c/TOKEN (aicmo.cam.outcomes.mail)


@dataclass(frozen=True)
class Refused:
    """:func:`begin_publish` said no; raise ``error`` once its transaction has committed."""

    error: Exception


def admitted_today(session: Session, campaign: Campaign, now: datetime, besides: int) -> int:
    """Published today plus sends admitted and not yet recorded (reservations), other than
    message ``besides``: what the publish-time admission counts."""
    sending = and_(
        OutreachMessage.publish_status == PublishStatus.QUEUED,
        OutreachMessage.sending_at_utc.is_not(None),
        OutreachMessage.id != besides,
    )
    return _used_today(session, campaign, now, sending)


def _check_buildable(message: OutreachMessage, lead: Lead, from_address: str) -> None:
    if message.channel != EMAIL:
        return
    if not lead.email:
        raise MessageUnbuildable(f"lead {lead.id} has no email address for message {message.id}")
    for name, value in (
        ("subject", message.subject),
        ("recipient", lead.email),
        ("from address", from_address),
    ):
        if value and _UNSAFE_HEADER.search(value):
            raise MessageUnbuildable(
                f"message {message.id} cannot be built: its {name} holds a control character "
                "(a line break in a header is refused)"
            )


def open_publish(
    session: Session, message_id: int, action_id: int, now: datetime, proof_mode: bool
) -> PublishJob:
    """Check everything that must hold before sending, then admit and reserve.

    Raises :class:`ReviewGateClosed` unless the message is APPROVED (or QUEUED/FAILED by this
    very action, i.e. a retry or a replay), :class:`CampaignHalted`, :class:`LeadNotContactable`,
    :class:`MessageUnbuildable` or :class:`DailyLimitReached` (a deferral: no attempt spent,
    due again at the next local midnight), and the recipient's admission
    (:mod:`aicmo.cam.admission`): outside the send window, over a frequency cap. On success
    the message is QUEUED by this action with its reservation set, in the caller's
    transaction.
    """
    campaign_id = session.scalar(
        select(OutreachMessage.campaign_id).where(OutreachMessage.id == message_id)
    )
    if campaign_id is None:
        raise MessageNotFound(message_id)
    # The campaign first: admission is decided and reserved under its lock.
    campaign = get_campaign(session, campaign_id, lock=True)
    message = session.scalars(
        select(OutreachMessage)
        .where(OutreachMessage.id == message_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
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
    from_address = campaign.from_address or get_settings().cam_from_address
    _check_buildable(message, lead, from_address)
    admission.check_send_window(campaign, lead, now)
    if admitted_today(session, campaign, now, message.id) >= campaign.daily_send_limit:
        _, day_end = today_bounds(now, campaign.timezone)
        wait = math.ceil((day_end - now).total_seconds()) + 1
        local = day_end.astimezone(zone(campaign.timezone))
        raise DailyLimitReached(
            f"waiting for the daily limit until {local.isoformat()} ({campaign.timezone}; "
            f"{day_end.isoformat()} UTC): campaign {campaign.id} published or is sending its "
            f"daily limit of {campaign.daily_send_limit}",
            retry_after=wait,
        )
    # Last: the person's lock is the one held the shortest (and always after the campaign's).
    admission.admit_recipient(session, campaign, message, lead, now)
    # Owned from here on: another action finds the gate closed while this one sends.
    message.publish_status = PublishStatus.QUEUED
    message.publish_action_id = action_id
    message.sending_at_utc = now
    message.updated_at_utc = now
    session.flush()
    return PublishJob(
        message_id=message.id,
        campaign_id=campaign.id,
        campaign_name=campaign.name,
        lead_id=lead.id,
        channel=message.channel,
        subject=message.subject,
        body=message.body,
        email=lead.email,
        audience=lead.linkedin_url or lead.display_name,
        from_address=from_address,
        proof_mode=proof_mode or campaign.mode == CampaignMode.PROOF,
        click_tracking=bool(campaign.click_tracking),
    )


def begin_publish(
    session: Session, message_id: int, action_id: int, now: datetime, proof_mode: bool
) -> PublishJob | Refused:
    """:func:`open_publish`, with the refusals that are final for the message written in the
    same transaction as the decision (the caller commits it, then raises ``error``):

    * :class:`CampaignHalted`: the message goes back to APPROVED, holding no room; resume
      (or the next tick) queues it again under a fresh key. Written under the campaign's
      lock, so a resume either comes before (and this publish sends) or sees it.
    * :class:`LeadNotContactable`, :class:`MessageUnbuildable`,
      :class:`~aicmo.cam.admission.FrequencyCapExceeded`: FAILED now, its room freed.
    * :class:`DailyLimitReached`, :class:`~aicmo.cam.admission.SendWindowClosed`,
      :class:`~aicmo.cam.admission.FrequencyCapped`: deferrals (the attempt is given back);
      the message keeps its state and waits.
    """
    try:
        return open_publish(session, message_id, action_id, now, proof_mode)
    except CampaignHalted as exc:
        _settle(session, message_id, action_id, now, exc, PublishStatus.APPROVED)
        return Refused(exc)
    except (LeadNotContactable, MessageUnbuildable, admission.FrequencyCapExceeded) as exc:
        _settle(session, message_id, action_id, now, exc, PublishStatus.FAILED)
        return Refused(exc)
    except (
        ReviewGateClosed,
        MessageNotFound,
        DailyLimitReached,
        admission.SendWindowClosed,
        admission.FrequencyCapped,
    ) as exc:
        return Refused(exc)


def _settle(
    session: Session,
    message_id: int,
    action_id: int,
    now: datetime,
    error: BaseException,
    status: PublishStatus,
) -> None:
    """The message this action was admitted to (or was about to be) ends its run here."""
    failed = status == PublishStatus.FAILED
    session.execute(
        update(OutreachMessage)
        .where(
            OutreachMessage.id == message_id,
            or_(
                OutreachMessage.publish_status == PublishStatus.APPROVED,
                and_(
                    OutreachMessage.publish_action_id == action_id,
                    OutreachMessage.publish_status.in_(
                        [PublishStatus.QUEUED, PublishStatus.FAILED]
                    ),
                ),
            ),
        )
        .values(
            publish_status=status,
            publish_action_id=action_id,
            sending_at_utc=None,
            queued_at_utc=None if not failed else OutreachMessage.queued_at_utc,
            failed_at_utc=now if failed else None,
            error=f"{type(error).__name__}: {error}"[:4000],
            updated_at_utc=now,
        )
        .execution_options(synchronize_session=False)
    )


def release_publish(
    session: Session, job: PublishJob, action_id: int, now: datetime, error: BaseException
) -> None:
    """The send failed: free the reservation. A permanent error (the message will never go
    out) makes it FAILED now; a transient one leaves it QUEUED for the retry."""
    if isinstance(error, PermanentError):
        _settle(session, job.message_id, action_id, now, error, PublishStatus.FAILED)
        return
    session.execute(
        update(OutreachMessage)
        .where(OutreachMessage.id == job.message_id, OutreachMessage.publish_action_id == action_id)
        .values(sending_at_utc=None, updated_at_utc=now)
        .execution_options(synchronize_session=False)
    )


def record_published(
    session: Session,
    job: PublishJob,
    external_id: str | None,
    action_id: int,
    now: datetime,
    provider_message_id: str | None = None,
) -> None:
    """PUBLISHED with its external id (and the provider's own id of the message, when it
    reports one: provider events are linked by either); the lead CONTACTED and due again
    after the step's wait. Recorded whatever happened to the message meanwhile: it was sent."""
    message = session.get(OutreachMessage, job.message_id, with_for_update=True)
    lead = session.get(Lead, job.lead_id, with_for_update=True, populate_existing=True)
    campaign = session.get(Campaign, job.campaign_id)
    if message is None or lead is None or campaign is None:
        raise MessageNotFound(job.message_id)
    message.publish_status = PublishStatus.PUBLISHED
    message.external_id = external_id
    message.provider_message_id = provider_message_id
    message.published_at_utc = now
    message.sending_at_utc = None
    message.publish_action_id = action_id
    message.failed_at_utc = None
    message.error = None
    message.updated_at_utc = now
    steps = campaign.steps
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
