"""``tick(session, campaign_id, now)``: one pass of a campaign's sequence.

1. Take the campaign's lease: one ``INSERT .. ON CONFLICT`` on the partial unique index of
   RUNNING runs, committed at once in its own transaction so a concurrent tick sees it. A
   lease held by no live run (expired, this same action's failed attempt, or a tick action
   no longer RUNNING) is taken over by the same statement. Held by a live tick: "skipped".
2. Read, in a short transaction of its own: stop if the campaign is not ACTIVE or its kill
   switch is on; pick due, contactable leads.
3. Draft each lead's next step (LLM or template) with no transaction open: an LLM call may
   take a while, and on SQLite an open transaction locks the whole database.
4. In the caller's transaction (for CAMPAIGN_TICK, the one that records SUCCESS): reconcile
   the campaign's stranded messages (``aicmo.cam.reconcile``), close leads whose sequence is
   exhausted (LOST), then per lead, re-checking the halt with a fresh read so a switch
   flipped mid-tick stops it at the next lead, claim it and store its message: DRAFT, or
   APPROVED when the campaign needs no approval. Queue CAMPAIGN_PUBLISH for APPROVED
   messages under the daily limit, and release the lease with the run's counters.

Nothing is drafted or published twice, whatever runs concurrently: a lead is claimed with a
guarded ``UPDATE .. WHERE step = n`` and a message is unique per (lead, step); a publish is
unique per message by its key.

SQLite: the lease is taken (and the plan read) on a second connection, so call ``tick``
before the caller's session writes anything (the CAMPAIGN_TICK handler does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Select,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam.campaigns import StepSpec, get_campaign
from aicmo.cam.drafting import Draft, Drafter, choose_channel
from aicmo.cam.errors import TickLeaseLost
from aicmo.cam.lease import Lease, abandon, take_lease
from aicmo.cam.lease import new_holder as new_holder  # its public home before lease.py
from aicmo.cam.models import (
    OPEN_LEAD_STATUSES,
    Campaign,
    Consent,
    Lead,
    LeadStatus,
    OrchestratorRun,
    OutreachMessage,
    PublishStatus,
    RunStatus,
)
from aicmo.cam.publishing import queue_approved, remaining_today
from aicmo.cam.reconcile import reconcile_campaign
from aicmo.cam.suppressions import lead_not_suppressed
from aicmo.config import get_settings
from aicmo.db import rowcount, utcnow
from aicmo.llm import TextGenerator, get_text_generator

log = logging.getLogger(__name__)


class _Unset:
    pass


UNSET: Any = _Unset()


@dataclass
class TickResult:
    campaign_id: int
    outcome: str = "done"  # "done", "stopped" (halted) or "skipped" (lease held)
    reason: str | None = None
    run_id: int | None = None
    takeovers: int = 0
    leads_considered: int = 0
    messages_drafted: int = 0
    messages_approved: int = 0
    messages_queued: int = 0
    leads_lost: int = 0
    leads_unreachable: int = 0
    publishes_failed: int = 0
    llm_drafts: int = 0
    llm_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind


def _release(session: Session, lease: Lease, result: TickResult, now: datetime) -> None:
    done = session.execute(
        update(OrchestratorRun)
        .where(
            OrchestratorRun.id == lease.run_id,
            OrchestratorRun.holder == lease.holder,
            OrchestratorRun.status == RunStatus.RUNNING,
        )
        .values(
            status=RunStatus.STOPPED if result.outcome == "stopped" else RunStatus.DONE,
            finished_at_utc=now,
            leads_considered=result.leads_considered,
            messages_drafted=result.messages_drafted,
            messages_queued=result.messages_queued,
            leads_lost=result.leads_lost,
            stop_reason=result.reason,
            details_json=result.as_dict(),
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(done) != 1:
        # Another tick took the lease over: roll back so only one tick's work counts.
        raise TickLeaseLost(
            f"campaign {lease.campaign_id}: the tick lease of run {lease.run_id} expired and "
            "was taken over; this tick's work is rolled back"
        )


def halt_reason(session: Session, campaign_id: int) -> str | None:
    """Why the campaign must not go on, read fresh from the database (not the session)."""
    row = session.execute(
        select(Campaign.status, Campaign.kill_switch).where(Campaign.id == campaign_id)
    ).first()
    if row is None:
        return "campaign deleted"
    if row.kill_switch:
        return "kill switch is on"
    if row.status != "ACTIVE":
        return f"campaign is {row.status}"
    return None


_OPEN: BindParameter[Any] = bindparam(
    "open_statuses", [s.value for s in OPEN_LEAD_STATUSES], expanding=True, literal_execute=True
)


def close_exhausted(session: Session, campaign: Campaign, now: datetime) -> int:
    """Due leads with no step left are LOST."""
    return rowcount(
        session.execute(
            update(Lead)
            .where(
                Lead.campaign_id == campaign.id,
                Lead.status.in_(_OPEN),
                Lead.next_action_at_utc.is_not(None),
                Lead.next_action_at_utc <= now,
                Lead.step >= campaign.step_count,
            )
            .values(status=LeadStatus.LOST, next_action_at_utc=None, updated_at_utc=now)
            .execution_options(synchronize_session=False)
        )
    )


def due_leads_query(campaign: Campaign, now: datetime, limit: int) -> Select[Lead]:
    """Due, open, contactable, not suppressed, not under review: oldest due first."""
    return (
        select(Lead)
        .where(
            Lead.campaign_id == campaign.id,
            # Literal statuses, so the planner can match the partial index ix_cam_leads_due.
            Lead.status.in_(_OPEN),
            Lead.next_action_at_utc.is_not(None),
            Lead.next_action_at_utc <= now,
            Lead.consent != Consent.DNC,
            Lead.requires_human_review.is_(False),
            Lead.step < campaign.step_count,
            lead_not_suppressed(),
        )
        .order_by(Lead.next_action_at_utc, Lead.id)
        .limit(limit)
    )


def due_leads(session: Session, campaign: Campaign, now: datetime, limit: int) -> list[Lead]:
    if limit <= 0:
        return []
    query = due_leads_query(campaign, now, limit)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def _claim_lead(session: Session, lead: Lead, number: int, now: datetime) -> bool:
    """Move the lead to step ``number`` unless a concurrent tick already did (or it changed)."""
    return (
        rowcount(
            session.execute(
                update(Lead)
                .where(
                    Lead.id == lead.id,
                    Lead.step == number - 1,
                    Lead.status.in_(_OPEN),
                    Lead.next_action_at_utc.is_not(None),
                    Lead.consent != Consent.DNC,
                    Lead.requires_human_review.is_(False),
                )
                .values(step=number, next_action_at_utc=None, updated_at_utc=now)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )


def _insert_message(session: Session, values: dict[str, Any]) -> int | None:
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        module.insert(OutreachMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["lead_id", "step"])
        .returning(OutreachMessage.id)
    )
    found: int | None = session.scalar(statement)
    return found


def _approved_backlog(session: Session, campaign_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutreachMessage)
            .where(
                OutreachMessage.campaign_id == campaign_id,
                OutreachMessage.publish_status == PublishStatus.APPROVED,
            )
        )
        or 0
    )


def _resolve_generator(generator: Any) -> TextGenerator | None:
    if generator is not UNSET:
        found: TextGenerator | None = generator
        return found
    try:
        return get_text_generator()
    except Exception:
        log.exception("the LLM client could not be built; drafting from templates")
        return None


def tick(
    session: Session,
    campaign_id: int,
    now: datetime | None = None,
    *,
    lease_seconds: float | None = None,
    generator: TextGenerator | None = UNSET,
    action_id: int | None = None,
    slot: datetime | None = None,
    batch_size: int | None = None,
    rotate_channels: bool = False,
) -> TickResult:
    """Run one tick of ``campaign_id`` in ``session``'s transaction (the caller commits).

    ``generator``: the LLM text generator (default: ``aicmo.llm.get_text_generator()``;
    None: templates only). ``batch_size`` overrides the campaign's. ``rotate_channels``
    spreads the batch over the campaign's channels (``auto.multichannel_batch``).
    """
    now = now or utcnow()
    engine = _engine(session)
    lease = take_lease(
        engine,
        campaign_id,
        now,
        lease_seconds or get_settings().cam_tick_lease_seconds,
        action_id=action_id,
        slot=slot,
    )
    if lease is None:
        log.info(
            "campaign %s: tick skipped, another tick holds the lease",
            campaign_id,
            extra={"campaign_id": campaign_id},
        )
        return TickResult(campaign_id, outcome="skipped", reason="lease held by another tick")
    try:
        result = _work(
            session,
            lease,
            now,
            _resolve_generator(generator),
            batch_size=batch_size,
            rotate_channels=rotate_channels,
        )
        _release(session, lease, result, now)
    except BaseException as exc:
        abandon(engine, lease, exc, now)
        raise
    log.info(
        "campaign %s: tick %s (%d drafted, %d queued, %d lost)%s",
        campaign_id,
        result.outcome,
        result.messages_drafted,
        result.messages_queued,
        result.leads_lost,
        f": {result.reason}" if result.reason else "",
        extra={"campaign_id": campaign_id, "run_id": lease.run_id},
    )
    return result


@dataclass
class _Planned:
    """What a tick read in its short first transaction (detached, plain loaded objects)."""

    campaign: Campaign
    steps: list[StepSpec]
    leads: list[Lead]
    stop: str | None = None


@dataclass(frozen=True)
class _Drafted:
    lead: Lead
    number: int
    draft: Draft | None  # None: no channel reaches the lead


@contextmanager
def _short_read(session: Session) -> Iterator[Session]:
    """A short transaction to read in, so none stays open across the drafts' LLM calls. If
    the caller opened its transaction already (and may have written in it, e.g. leads
    captured just before), read there, as it asked."""
    if session.in_transaction():
        yield session
        return
    with Session(_engine(session), expire_on_commit=False) as read, read.begin():
        yield read


def _plan(session: Session, lease: Lease, now: datetime, batch_size: int | None) -> _Planned:
    with _short_read(session) as read:
        return _read_plan(read, lease, now, batch_size)


def _read_plan(read: Session, lease: Lease, now: datetime, batch_size: int | None) -> _Planned:
    campaign = get_campaign(read, lease.campaign_id)
    stop = halt_reason(read, campaign.id)
    steps = [StepSpec.model_validate(step) for step in campaign.steps[: campaign.step_count]]
    if stop:
        return _Planned(campaign, steps, [], stop)
    budget = batch_size or campaign.batch_size
    if not campaign.requires_approval:
        # Auto-approved drafts beyond today's room would only wait and go stale.
        room = remaining_today(read, campaign, now) - _approved_backlog(read, campaign.id)
        budget = min(budget, max(0, room))
    return _Planned(campaign, steps, due_leads(read, campaign, now, budget))


def _draft_all(
    session: Session, plan: _Planned, drafter: Drafter, rotate_channels: bool
) -> tuple[list[_Drafted], str | None]:
    """Draft every planned lead with no transaction open: an LLM call may take a while."""
    drafted: list[_Drafted] = []
    campaign = plan.campaign
    for index, lead in enumerate(plan.leads):
        if drafter.llm_available:
            # Stop asking the LLM for a campaign halted meanwhile (a short read).
            with _short_read(session) as read:
                stop = halt_reason(read, campaign.id)
            if stop:
                return drafted, stop
        number = lead.step + 1
        step = plan.steps[number - 1]
        channel = choose_channel(campaign, step, lead, rotation=index if rotate_channels else 0)
        draft = None if channel is None else drafter.draft(lead, number, step, channel)
        drafted.append(_Drafted(lead, number, draft))
    return drafted, None


def _work(
    session: Session,
    lease: Lease,
    now: datetime,
    generator: TextGenerator | None,
    *,
    batch_size: int | None,
    rotate_channels: bool,
) -> TickResult:
    """Read (a short transaction), draft (none open), write (``session``'s transaction)."""
    result = TickResult(lease.campaign_id, run_id=lease.run_id, takeovers=lease.takeovers)
    plan = _plan(session, lease, now, batch_size)
    if plan.stop:
        result.outcome, result.reason = "stopped", plan.stop
        return result
    campaign = plan.campaign
    drafter = Drafter(campaign, generator)
    drafted, stopped = _draft_all(session, plan, drafter, rotate_channels)
    result.llm_drafts, result.llm_failures = drafter.llm_drafts, drafter.llm_failures
    if stopped:
        result.outcome, result.reason = "stopped", stopped
        return result

    repaired = reconcile_campaign(session, campaign.id, now, queue=False)
    result.publishes_failed = sum(1 for r in repaired if r.done.startswith("marked FAILED"))
    result.leads_lost = close_exhausted(session, campaign, now)
    status = PublishStatus.DRAFT if campaign.requires_approval else PublishStatus.APPROVED
    for item in drafted:
        stop = halt_reason(session, campaign.id)
        if stop:
            result.outcome, result.reason = "stopped", stop
            break
        result.leads_considered += 1
        lead, draft = item.lead, item.draft
        if draft is None:
            lost = update(Lead).where(Lead.id == lead.id, Lead.step == lead.step)
            session.execute(
                lost.values(
                    status=LeadStatus.LOST, next_action_at_utc=None, updated_at_utc=now
                ).execution_options(synchronize_session=False)
            )
            result.leads_unreachable += 1
            continue
        if not _claim_lead(session, lead, item.number, now):
            continue
        message_id = _insert_message(
            session,
            {
                "campaign_id": campaign.id,
                "lead_id": lead.id,
                "step": item.number,
                "channel": draft.channel,
                "subject": draft.subject,
                "body": draft.body,
                "generated_by": draft.generated_by,
                "publish_status": status,
                "reviewer": None if campaign.requires_approval else "auto",
                "approved_at_utc": None if campaign.requires_approval else now,
                "created_at_utc": now,
                "updated_at_utc": now,
            },
        )
        if message_id is None:
            continue
        result.messages_drafted += 1
        if status == PublishStatus.APPROVED:
            result.messages_approved += 1

    if result.outcome != "stopped":
        stop = halt_reason(session, campaign.id)
        if stop:
            result.outcome, result.reason = "stopped", stop
        else:
            result.messages_queued = len(queue_approved(session, campaign.id, now))
    return result
