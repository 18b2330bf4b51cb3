"""The campaign side of the census: what nothing would move on its own, and its repair.

Reconciliation works from the message side and never needs the publish action's row to
exist: an action may be purged (``AICMO_RETENTION_DAYS``) while its campaign is paused,
and a QUEUED message counts against the daily limit until something moves it.

* A QUEUED message whose publish action is gone, or ended without publishing it, is
  *stranded*: it holds daily room and nothing will send it. Repair: a real failure
  (FAILED/DLQ/CANCELLED for a reason other than a halt) makes the message FAILED; a halt or
  a purged action hands it back to APPROVED, and it is queued again through
  :func:`aicmo.cam.publishing.queue_approved` (a fresh key, the daily limit, the review gate
  and every check of the publish once more), now if the campaign runs, on resume if not.
  A reservation left by a publish that died mid-send is cleared with it.
* A RUNNING ``cam_orchestrator_runs`` row is the campaign's tick lease; one whose lease
  expired, or whose CAMPAIGN_TICK action has ended, is held by no live run. Repair: release
  it (FAILED, with the reason), so the next tick need not wait for the expiry.

:func:`reconcile_campaign` is what ``resume`` and every tick run for their campaign;
:func:`find_stranded_messages`, :func:`find_orphan_leases` and :func:`repair` are the census
``aicmo doctor`` shows and ``--repair`` applies. APPROVED messages are never stranded: ticks
queue them under the daily limit while the campaign runs, and resume does after a halt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, or_, select, update
from sqlalchemy.orm import Session

from aicmo.cam.campaigns import get_campaign
from aicmo.cam.errors import CampaignHalted
from aicmo.cam.models import (
    Campaign,
    CampaignStatus,
    OrchestratorRun,
    OutreachMessage,
    PublishStatus,
    RunStatus,
)
from aicmo.cam.publishing import queue_approved
from aicmo.db import rowcount, utcnow
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.status import ActionStatus

log = logging.getLogger(__name__)

STRANDED_MESSAGE = "stranded_message"
ORPHAN_LEASE = "orphan_campaign_lease"
_ENDED = (ActionStatus.SUCCESS, ActionStatus.FAILED, ActionStatus.DLQ, ActionStatus.CANCELLED)
_HALTED_PREFIX = f"{CampaignHalted.__name__}:"


@dataclass(frozen=True)
class Stranded:
    """One item nothing would move on its own."""

    kind: str  # STRANDED_MESSAGE (subject: a message id) or ORPHAN_LEASE (a run id)
    subject_id: int
    campaign_id: int
    detail: str
    # The action it points at (a message's publish, a lease's tick), that action's status
    # ("MISSING" when the row is gone) and last error.
    action_id: int | None = None
    action_status: str | None = None
    action_error: str | None = None


@dataclass(frozen=True)
class Repaired:
    item: Stranded
    done: str  # what the repair did, in words


# -- the census ----------------------------------------------------------------------------


def find_stranded_messages(
    session: Session, campaign_id: int | None = None, limit: int = 10_000
) -> list[Stranded]:
    """QUEUED messages whose publish action is gone or ended without publishing them."""
    query = (
        select(
            OutreachMessage.id,
            OutreachMessage.campaign_id,
            OutreachMessage.publish_action_id,
            AOLAction.status,
            AOLAction.last_error,
        )
        .outerjoin(AOLAction, AOLAction.id == OutreachMessage.publish_action_id)
        .where(
            OutreachMessage.publish_status == PublishStatus.QUEUED,
            or_(AOLAction.id.is_(None), AOLAction.status.in_(_ENDED)),
        )
        .order_by(OutreachMessage.id)
        .limit(limit)
    )
    if campaign_id is not None:
        query = query.where(OutreachMessage.campaign_id == campaign_id)
    found = []
    for message_id, cid, action_id, status, error in session.execute(query):
        if status is None:
            detail = f"QUEUED, but its publish action {action_id} no longer exists"
        else:
            detail = f"QUEUED, but its publish action {action_id} is {status}"
        found.append(
            Stranded(
                STRANDED_MESSAGE,
                message_id,
                cid,
                detail,
                action_id=action_id,
                action_status=status or "MISSING",
                action_error=error,
            )
        )
    return found


def find_orphan_leases(
    session: Session, now: datetime | None = None, campaign_id: int | None = None
) -> list[Stranded]:
    """RUNNING tick leases whose lease expired or whose CAMPAIGN_TICK action has ended."""
    now = now or utcnow()
    query = (
        select(
            OrchestratorRun.id,
            OrchestratorRun.campaign_id,
            OrchestratorRun.action_id,
            OrchestratorRun.lease_expires_at_utc,
            AOLAction.status,
        )
        .outerjoin(AOLAction, AOLAction.id == OrchestratorRun.action_id)
        .where(OrchestratorRun.status == RunStatus.RUNNING)
        .order_by(OrchestratorRun.id)
    )
    if campaign_id is not None:
        query = query.where(OrchestratorRun.campaign_id == campaign_id)
    found = []
    for run_id, cid, action_id, expires, status in session.execute(query):
        if expires < now:
            detail = f"tick lease expired at {expires.isoformat()}"
        elif action_id is not None and (status is None or status in _ENDED):
            detail = f"its tick action {action_id} is {status or 'gone'}"
        else:
            continue
        found.append(
            Stranded(ORPHAN_LEASE, run_id, cid, detail, action_id=action_id, action_status=status)
        )
    return found


def census(session: Session, now: datetime | None = None) -> list[Stranded]:
    """Every stranded campaign item (messages, then leases)."""
    return [*find_stranded_messages(session), *find_orphan_leases(session, now)]


# -- repairs -------------------------------------------------------------------------------


def _still_stranded(item: Stranded) -> Any:
    """The condition the message was found under: QUEUED by the same (ended) action."""
    return and_(
        OutreachMessage.id == item.subject_id,
        OutreachMessage.publish_status == PublishStatus.QUEUED,
        OutreachMessage.publish_action_id.is_(None)
        if item.action_id is None
        else OutreachMessage.publish_action_id == item.action_id,
    )


def _hand_back(session: Session, item: Stranded, now: datetime) -> bool:
    """QUEUED -> APPROVED, keeping the old action's id so the re-queue gets a fresh key."""
    return (
        rowcount(
            session.execute(
                update(OutreachMessage)
                .where(_still_stranded(item))
                .values(
                    publish_status=PublishStatus.APPROVED,
                    queued_at_utc=None,
                    sending_at_utc=None,
                    updated_at_utc=now,
                )
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )


def _fail(session: Session, item: Stranded, now: datetime) -> bool:
    return (
        rowcount(
            session.execute(
                update(OutreachMessage)
                .where(_still_stranded(item))
                .values(
                    publish_status=PublishStatus.FAILED,
                    error=item.action_error or f"publish action {item.action_status}",
                    sending_at_utc=None,
                    failed_at_utc=now,
                    updated_at_utc=now,
                )
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )


def _repair_message(session: Session, item: Stranded, now: datetime) -> str | None:
    status, error = item.action_status, item.action_error or ""
    if status == ActionStatus.SUCCESS:
        # A publish records PUBLISHED with its SUCCESS; this one did not, so whether it was
        # sent is unknown: an operator decides (sending again could send twice).
        return None
    if status in (ActionStatus.FAILED, ActionStatus.DLQ, ActionStatus.CANCELLED) and not (
        error.startswith(_HALTED_PREFIX)
    ):
        return "marked FAILED (its publish gave up)" if _fail(session, item, now) else None
    # Purged, or stopped only by a halt: nothing says it must not be sent.
    return "handed back to APPROVED for re-queueing" if _hand_back(session, item, now) else None


def _release_lease(session: Session, item: Stranded, now: datetime) -> str | None:
    released = rowcount(
        session.execute(
            update(OrchestratorRun)
            .where(
                OrchestratorRun.id == item.subject_id,
                OrchestratorRun.status == RunStatus.RUNNING,
                # Taken over meanwhile (same row, new holder and expiry): live, leave it.
                or_(
                    OrchestratorRun.lease_expires_at_utc < now,
                    OrchestratorRun.action_id == item.action_id
                    if item.action_id is not None
                    else false(),
                ),
            )
            .values(
                status=RunStatus.FAILED,
                finished_at_utc=now,
                stop_reason=f"released by reconciliation: {item.detail}"[:2000],
            )
            .execution_options(synchronize_session=False)
        )
    )
    return "lease released" if released else None


def repair(
    session: Session, items: list[Stranded], now: datetime | None = None, *, queue: bool = True
) -> list[Repaired]:
    """Repair ``items`` (from the census) in the caller's transaction; each repair repeats
    the condition it was found under, so one done meanwhile by someone else is skipped.
    With ``queue``, messages handed back are queued at once in campaigns that run."""
    now = now or utcnow()
    done: list[Repaired] = []
    campaigns: set[int] = set()
    for item in items:
        if item.kind == STRANDED_MESSAGE:
            what = _repair_message(session, item, now)
            if what and what.startswith("handed back"):
                campaigns.add(item.campaign_id)
        else:
            what = _release_lease(session, item, now)
        if what:
            done.append(Repaired(item, what))
    for campaign_id in sorted(campaigns) if queue else []:
        queued = _queue_if_running(session, campaign_id, now)
        if queued:
            done = [
                Repaired(r.item, f"{r.done}; queued again")
                if r.item.kind == STRANDED_MESSAGE and r.item.subject_id in queued
                else r
                for r in done
            ]
    for repaired in done:
        log.warning(
            "reconciled %s %s of campaign %s (%s): %s",
            repaired.item.kind,
            repaired.item.subject_id,
            repaired.item.campaign_id,
            repaired.item.detail,
            repaired.done,
            extra={"campaign_id": repaired.item.campaign_id, "event": "RECONCILED"},
        )
    return done


def _queue_if_running(session: Session, campaign_id: int, now: datetime) -> set[int]:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != CampaignStatus.ACTIVE or campaign.kill_switch:
        return set()
    return set(queue_approved(session, campaign_id, now))


def reconcile_campaign(
    session: Session, campaign_id: int, now: datetime | None = None, *, queue: bool = True
) -> list[Repaired]:
    """Repair the campaign's stranded messages (its lease is the tick's business), then,
    with ``queue`` and the campaign running, queue its APPROVED messages under the limit."""
    now = now or utcnow()
    found = find_stranded_messages(session, campaign_id)
    done = repair(session, found, now, queue=False) if found else []
    if queue and not get_campaign(session, campaign_id).halted:
        queue_approved(session, campaign_id, now)
    return done
