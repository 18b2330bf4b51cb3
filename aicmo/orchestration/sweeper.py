"""The sweeper: the database catching up with the broker.

Run by beat as ``aol.sweep`` every few seconds, and safe to run concurrently with itself
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers). Each step reads one
small partial index, so a sweep costs O(due rows), not O(table). Every time it compares is
the database's (``now()``), never this host's: hosts drift.

1. RUNNING actions whose lease expired (the worker died) go to RETRY, or DLQ when their
   attempts are used up. A message that kills its worker every time ends in DLQ.
2. If the broker lost its data (flush, restart without persistence), every READY/RETRY
   action is marked unsent.
3. Waiting actions with no message that are due within the dispatch horizon are sent,
   with a countdown no longer than the horizon; PENDING ones become READY. Only types this
   process's registry knows are sent: a row of an unknown type (removed or renamed by a
   deploy) is set aside, logged once as SET_ASIDE, and never blocks the batch; it is sent as
   soon as a deploy brings its type back.
4. READY/RETRY actions whose message should have arrived more than a grace period ago are
   sent again: after ``resend_grace_seconds`` when their queue is empty, and after
   ``resend_backlog_factor`` grace periods whatever its depth (a message still waiting in a
   busy queue is probably not lost, but under a steady backlog "probably" must not become
   "never"). Each resend restarts the row's clock, so a row gets at most one extra message
   per period.

Also, after 1: concurrency slots held by claims that are no longer RUNNING are freed and a
waiter of each such key woken (aicmo.orchestration.concurrency).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, insert, select, update
from sqlalchemy.orm import Session

from aicmo.config import Settings, get_settings
from aicmo.db import db_now, get_engine, rowcount
from aicmo.orchestration import concurrency
from aicmo.orchestration.batch_store import TOKEN_SEPARATOR
from aicmo.orchestration.dispatch import Dispatch, Dispatcher, get_dispatcher
from aicmo.orchestration.models import AOLAction, AOLControl, AOLExecutionLog
from aicmo.orchestration.queue import publish_now
from aicmo.orchestration.registry import registry
from aicmo.orchestration.status import (
    CLAIMABLE_STATUSES,
    WAITING_STATUSES,
    ActionStatus,
    LogEvent,
)

log = logging.getLogger(__name__)

LEASE_EXPIRED_ERROR = "lease expired: the worker was lost while running attempt"


@dataclass
class SweepReport:
    lease_expired: int = 0
    dead_lettered: int = 0
    dispatched: int = 0
    resent: int = 0
    set_aside: int = 0  # waiting rows of types this process does not know
    broker_reset: bool = False
    paused: bool = False
    duration_ms: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lease_expired": self.lease_expired,
            "dead_lettered": self.dead_lettered,
            "dispatched": self.dispatched,
            "resent": self.resent,
            "set_aside": self.set_aside,
            "broker_reset": self.broker_reset,
            "paused": self.paused,
            "duration_ms": round(self.duration_ms, 2),
        }


def _locked_ids(session: Session, query: Any, limit: int) -> Any:
    """Row ids for an UPDATE .. WHERE id IN (..): skip rows another sweeper holds."""
    query = query.limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


class Sweeper:
    def __init__(
        self,
        settings: Settings | None = None,
        dispatcher: Dispatcher | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self._dispatcher = dispatcher
        self._engine = engine

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher or get_dispatcher()

    def engine(self) -> Engine:
        return self._engine or get_engine(self.settings.database_url)

    def sweep(self, now: datetime | None = None) -> SweepReport:
        started = time.monotonic()
        report = SweepReport()
        # ``now`` is injectable for tests; by default it is the database's clock.
        now = now or db_now(self.engine())
        self.expire_leases(now, report)
        try:
            # After the expiries: a slot whose holder's lease just ended is freed now.
            concurrency.free_stale(self.engine(), self.dispatcher)
        except Exception as exc:
            report.errors.append(f"slots: {exc}")
            log.warning("sweep: could not free stale concurrency slots: %s", exc)
        paused_all, paused_types = self.paused_scopes()
        report.paused = paused_all
        try:
            report.broker_reset = self.dispatcher.broker_was_reset()
        except Exception as exc:  # the broker is down: nothing can be sent this round
            report.errors.append(f"broker: {exc}")
            log.warning("sweep: broker unreachable: %s", exc)
            report.duration_ms = (time.monotonic() - started) * 1000
            return report
        if report.broker_reset:
            self.mark_all_unsent()
        report.set_aside = self.set_aside_unknown(now)
        if not paused_all:
            report.dispatched = self.dispatch_due(now, exclude_types=paused_types)
            report.resent = self.resend_lost(now, exclude_types=paused_types)
        report.duration_ms = (time.monotonic() - started) * 1000
        if (
            report.lease_expired
            or report.dispatched
            or report.resent
            or report.broker_reset
            or report.set_aside
        ):
            log.info("sweep: %s", report.as_dict(), extra={"event": "SWEEP", **report.as_dict()})
        return report

    # -- 1. expired leases -----------------------------------------------------------------

    def expire_leases(self, now: datetime, report: SweepReport) -> None:
        batch = self.settings.sweep_batch_size
        while True:
            with Session(self.engine()) as session, session.begin():
                ids = _locked_ids(
                    session,
                    select(AOLAction.id)
                    .where(
                        AOLAction.status == ActionStatus.RUNNING,
                        AOLAction.lease_expires_at_utc < now,
                    )
                    .order_by(AOLAction.lease_expires_at_utc),
                    batch,
                )
                # A batched action (its token has the batch's "#") that never started (no
                # started_at_utc: its batch's worker died before its turn,
                # aicmo.orchestration.batch) did not run: its attempt is given back and it
                # never goes to DLQ for it.
                never_ran = AOLAction.started_at_utc.is_(None) & AOLAction.claimed_by.contains(
                    TOKEN_SEPARATOR
                )
                exhausted = (AOLAction.attempts >= AOLAction.max_attempts) & ~never_ran
                rows = session.execute(
                    update(AOLAction)
                    .where(AOLAction.id.in_(ids), AOLAction.status == ActionStatus.RUNNING)
                    .values(
                        status=case(
                            (exhausted, ActionStatus.DLQ.value), else_=ActionStatus.RETRY.value
                        ),
                        finished_at_utc=case((exhausted, now), else_=None),
                        attempts=case(
                            (never_ran & (AOLAction.attempts > 0), AOLAction.attempts - 1),
                            else_=AOLAction.attempts,
                        ),
                        not_before_utc=now,
                        queued_at_utc=None,
                        lease_expires_at_utc=None,
                        last_error=LEASE_EXPIRED_ERROR,
                        updated_at_utc=now,
                    )
                    .returning(
                        AOLAction.id,
                        AOLAction.status,
                        AOLAction.attempts,
                        AOLAction.claimed_by,
                        AOLAction.action_type,
                    )
                    .execution_options(synchronize_session=False)
                ).all()
                logs = []
                for action_id, status, attempts, claimed_by, action_type in rows:
                    error = f"{LEASE_EXPIRED_ERROR} {attempts} ({claimed_by})"
                    events = [LogEvent.LEASE_EXPIRED]
                    if status == ActionStatus.DLQ:
                        report.dead_lettered += 1
                        events.append(LogEvent.DEAD_LETTERED)
                    for event in events:
                        logs.append(
                            {
                                "action_id": action_id,
                                "event": event,
                                "attempt": attempts,
                                "worker": claimed_by,
                                "error": error,
                                "created_at_utc": now,
                            }
                        )
                    log.warning(
                        "action %s %s: %s -> %s",
                        action_id,
                        action_type,
                        error,
                        status,
                        extra={"action_id": action_id, "event": "LEASE_EXPIRED"},
                    )
                if logs:
                    session.execute(insert(AOLExecutionLog), logs)
            report.lease_expired += len(rows)
            if len(rows) < batch:
                return

    # -- pause -----------------------------------------------------------------------------

    def paused_scopes(self) -> tuple[bool, set[str]]:
        with Session(self.engine()) as session:
            names = session.scalars(select(AOLControl.name).where(AOLControl.enabled)).all()
        paused_types = {n.split(":", 1)[1] for n in names if n.startswith("pause:")}
        return "pause" in names, paused_types

    # -- 2. broker reset -------------------------------------------------------------------

    def mark_all_unsent(self) -> int:
        with Session(self.engine()) as session, session.begin():
            count = rowcount(
                session.execute(
                    update(AOLAction)
                    .where(
                        AOLAction.status.in_(CLAIMABLE_STATUSES),
                        AOLAction.queued_at_utc.is_not(None),
                    )
                    .values(queued_at_utc=None)
                    .execution_options(synchronize_session=False)
                )
            )
        log.warning(
            "broker lost its messages: %d READY/RETRY action(s) will be sent again",
            count,
            extra={"event": "BROKER_RESET", "count": count},
        )
        return count

    # -- 3a. unknown types -----------------------------------------------------------------

    def set_aside_unknown(self, now: datetime) -> int:
        """Count waiting rows of types this process does not know; log each once.

        They stay as they are (their status says where they were in the lifecycle), out of
        every batch, and move on by themselves once a deploy brings the type back.
        """
        known = registry.names()
        waiting_unknown = (
            AOLAction.status.in_(WAITING_STATUSES),
            AOLAction.action_type.not_in(known),
        )
        with Session(self.engine()) as session, session.begin():
            counts = dict(
                session.execute(
                    select(AOLAction.action_type, func.count())
                    .where(*waiting_unknown)
                    .group_by(AOLAction.action_type)
                ).all()
            )
            if not counts:
                return 0
            already = (
                select(AOLExecutionLog.id)
                .where(
                    AOLExecutionLog.action_id == AOLAction.id,
                    AOLExecutionLog.event == LogEvent.SET_ASIDE,
                    AOLExecutionLog.created_at_utc >= AOLAction.updated_at_utc,
                )
                .exists()
            )
            fresh = session.execute(
                select(AOLAction.id, AOLAction.action_type, AOLAction.status, AOLAction.attempts)
                .where(*waiting_unknown, ~already)
                .limit(self.settings.sweep_batch_size)
            ).all()
            if fresh:
                session.execute(
                    insert(AOLExecutionLog),
                    [
                        {
                            "action_id": action_id,
                            "event": LogEvent.SET_ASIDE,
                            "attempt": attempts,
                            "error": f"type {action_type} is not registered here; left "
                            f"{status} until a deploy brings it back or it is cancelled",
                            "details_json": {"status": status, "known_types": known},
                            "created_at_utc": now,
                        }
                        for action_id, action_type, status, attempts in fresh
                    ],
                )
        total = sum(counts.values())
        log.warning(
            "%d waiting action(s) of unregistered type(s) set aside: %s",
            total,
            ", ".join(f"{t} ({n})" for t, n in sorted(counts.items())),
            extra={"event": LogEvent.SET_ASIDE.value, "count": total, "types": sorted(counts)},
        )
        return total

    # -- 3. due, never sent ----------------------------------------------------------------

    def dispatch_due(self, now: datetime, exclude_types: set[str] | None = None) -> int:
        horizon = now + timedelta(seconds=self.settings.dispatch_horizon_seconds)
        total = 0
        while True:
            with Session(self.engine()) as session, session.begin():
                query = select(AOLAction.id).where(
                    AOLAction.queued_at_utc.is_(None),
                    AOLAction.status.in_(WAITING_STATUSES),
                    AOLAction.not_before_utc <= horizon,
                    # An unknown type cannot be sent; it must not take a place in the batch.
                    AOLAction.action_type.in_(registry.names()),
                )
                if exclude_types:
                    query = query.where(AOLAction.action_type.not_in(exclude_types))
                ids = _locked_ids(
                    session,
                    query.order_by(AOLAction.not_before_utc),
                    self.settings.sweep_batch_size,
                )
                rows = session.execute(
                    update(AOLAction)
                    .where(AOLAction.id.in_(ids), AOLAction.queued_at_utc.is_(None))
                    .values(
                        status=case(
                            (AOLAction.status == ActionStatus.PENDING, ActionStatus.READY.value),
                            else_=AOLAction.status,
                        ),
                        queued_at_utc=case(
                            (AOLAction.not_before_utc > now, AOLAction.not_before_utc), else_=now
                        ),
                        updated_at_utc=now,
                    )
                    .returning(
                        AOLAction.id,
                        AOLAction.action_type,
                        AOLAction.not_before_utc,
                        AOLAction.priority,
                    )
                    .execution_options(synchronize_session=False)
                ).all()
            total += len(rows)
            if not self._publish(rows, now) or len(rows) < self.settings.sweep_batch_size:
                return total

    # -- 4. sent, but never arrived --------------------------------------------------------

    def resend_lost(self, now: datetime, exclude_types: set[str] | None = None) -> int:
        grace = self.settings.resend_grace_seconds
        quiet_cutoff = now - timedelta(seconds=grace)
        busy_cutoff = now - timedelta(seconds=grace * self.settings.resend_backlog_factor)
        queues: dict[str, list[str]] = defaultdict(list)
        for spec in registry.specs():
            if not exclude_types or spec.name not in exclude_types:
                queues[spec.queue].append(spec.name)
        total = 0
        for queue, types in sorted(queues.items()):
            try:
                depth = self.dispatcher.queue_depth(queue)
            except Exception as exc:
                log.warning("sweep: cannot read depth of queue %s: %s", queue, exc)
                continue
            cutoff = busy_cutoff if depth else quiet_cutoff
            with Session(self.engine()) as session, session.begin():
                ids = _locked_ids(
                    session,
                    select(AOLAction.id)
                    .where(
                        AOLAction.status.in_(CLAIMABLE_STATUSES),
                        AOLAction.queued_at_utc < cutoff,
                        AOLAction.action_type.in_(types),
                    )
                    .order_by(AOLAction.queued_at_utc),
                    self.settings.sweep_batch_size,
                )
                rows = session.execute(
                    update(AOLAction)
                    .where(AOLAction.id.in_(ids), AOLAction.queued_at_utc < cutoff)
                    .values(queued_at_utc=now, updated_at_utc=now)
                    .returning(
                        AOLAction.id,
                        AOLAction.action_type,
                        AOLAction.not_before_utc,
                        AOLAction.priority,
                    )
                    .execution_options(synchronize_session=False)
                ).all()
            if rows:
                log.warning(
                    "re-sending %d action(s) whose message was lost (queue %s, depth %s)",
                    len(rows),
                    queue,
                    depth,
                    extra={"event": "RESENT", "count": len(rows), "depth": depth},
                )
            self._publish(rows, now)
            total += len(rows)
        return total

    def _publish(self, rows: Sequence[Any], now: datetime) -> bool:
        items = [
            Dispatch(
                action_id,
                action_type,
                max(0.0, (not_before - now).total_seconds()),
                priority,
                batchable=True,
            )
            for action_id, action_type, not_before, priority in rows
        ]
        return publish_now(items, self.dispatcher)


def sweep(now: datetime | None = None) -> SweepReport:
    return Sweeper().sweep(now)
