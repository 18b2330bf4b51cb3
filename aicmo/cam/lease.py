"""The campaign's tick lease: one RUNNING ``cam_orchestrator_runs`` row per campaign.

Taken in one committed statement (``INSERT .. ON CONFLICT`` on the partial unique index of
RUNNING runs) on a connection of its own, so a concurrent tick sees it at once; released by
the tick in its own transaction (``orchestrator``), or freed early when the tick fails.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Insert, and_, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam.errors import CampaignNotFound
from aicmo.cam.models import LIVE_RUN_WHERE, Campaign, OrchestratorRun, RunStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    run_id: int
    campaign_id: int
    holder: str
    expires_at: datetime
    takeovers: int


def new_holder() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:10]}"


# Spelt out: inside INSERT .. ON CONFLICT there is no FROM for SQLAlchemy to correlate an
# EXISTS with, and an uncorrelated one would scan every run.
_TICK_ACTION_NOT_RUNNING = text(
    "NOT EXISTS (SELECT 1 FROM aol_actions WHERE aol_actions.id = "
    "cam_orchestrator_runs.action_id AND aol_actions.status = 'RUNNING')"
)


def _run_insert(engine: Engine) -> Any:
    module: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
    return module.insert(OrchestratorRun)


def take_lease(
    engine: Engine,
    campaign_id: int,
    now: datetime,
    lease_seconds: float,
    *,
    holder: str | None = None,
    action_id: int | None = None,
    slot: datetime | None = None,
) -> Lease | None:
    """Take the campaign's lease in one committed statement, or None while a live run holds it.

    A RUNNING run held by no live run is taken over in place (``takeovers`` + 1): its lease
    expired, or it names this same action (a retry finding its own failed attempt's lease,
    left behind on SQLite), or its tick action is no longer RUNNING. That tick died before
    committing anything, so there is nothing of it to keep; should it still be running
    somewhere, its release finds another holder and its work rolls back (TickLeaseLost).
    Only a live tick's lease makes this one "skipped": that tick does the campaign's work.
    """
    holder = holder or new_holder()
    expires = now + timedelta(seconds=lease_seconds)
    insert: Insert = _run_insert(engine).values(
        campaign_id=campaign_id,
        status=RunStatus.RUNNING,
        holder=holder,
        action_id=action_id,
        slot_utc=slot,
        started_at_utc=now,
        lease_expires_at_utc=expires,
        takeovers=0,
        leads_considered=0,
        messages_drafted=0,
        messages_queued=0,
        leads_lost=0,
    )
    excluded = insert.excluded  # type: ignore[attr-defined]
    statement = insert.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=[OrchestratorRun.campaign_id],
        index_where=text(LIVE_RUN_WHERE),
        set_={
            "holder": excluded.holder,
            "action_id": excluded.action_id,
            "slot_utc": excluded.slot_utc,
            "started_at_utc": excluded.started_at_utc,
            "lease_expires_at_utc": excluded.lease_expires_at_utc,
            "takeovers": OrchestratorRun.takeovers + 1,
        },
        where=or_(
            OrchestratorRun.lease_expires_at_utc < excluded.started_at_utc,
            # A lease held by no live run: this very action's earlier attempt (its retry), or
            # a tick action that is no longer RUNNING (failed, dead-lettered, purged).
            OrchestratorRun.action_id == excluded.action_id,
            and_(OrchestratorRun.action_id.is_not(None), _TICK_ACTION_NOT_RUNNING),
        ),
    ).returning(OrchestratorRun.id, OrchestratorRun.takeovers)
    with Session(engine) as lease_session, lease_session.begin():
        if lease_session.get(Campaign, campaign_id) is None:
            raise CampaignNotFound(campaign_id)
        row = lease_session.execute(statement).first()
    if row is None:
        return None
    lease = Lease(row.id, campaign_id, holder, expires, row.takeovers)
    if lease.takeovers:
        log.warning(
            "campaign %s: took over an expired tick lease (run %s)",
            campaign_id,
            lease.run_id,
            extra={"campaign_id": campaign_id, "run_id": lease.run_id},
        )
    return lease


def abandon(engine: Engine, lease: Lease, error: BaseException, now: datetime) -> None:
    """Free the lease of a failed tick now rather than at expiry (best effort)."""
    if engine.dialect.name == "sqlite":
        # The failed tick's transaction still holds SQLite's write lock: a second
        # connection would wait for it. The lease expires instead.
        return
    try:
        with Session(engine) as s, s.begin():
            s.execute(
                update(OrchestratorRun)
                .where(
                    OrchestratorRun.id == lease.run_id,
                    OrchestratorRun.holder == lease.holder,
                    OrchestratorRun.status == RunStatus.RUNNING,
                )
                .values(
                    status=RunStatus.FAILED,
                    finished_at_utc=now,
                    stop_reason=f"{type(error).__name__}: {error}"[:2000],
                )
            )
    except Exception:
        log.exception("campaign %s: could not free the tick lease", lease.campaign_id)
