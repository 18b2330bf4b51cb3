"""Deleting old finished actions (beat's daily ``aol.purge``).

An action that ended (SUCCESS, FAILED, DLQ, CANCELLED) longer than ``AICMO_RETENTION_DAYS``
ago is deleted with its execution log rows. Nothing else is ever touched: the batch is chosen
by the terminal statuses and ``finished_at_utc`` (the partial index ``ix_aol_actions_finished``
answers it oldest first, so a batch costs what it deletes, however large the table), and the
DELETE repeats both conditions. Each batch is its own short transaction; on PostgreSQL its rows
are locked with ``SKIP LOCKED``, so an operator replaying a DLQ action at that moment either
wins (the action is READY again and stays) or waits for the batch and finds nothing.

On PostgreSQL the execution log is partitioned by month (``aicmo.orchestration.partitions``):
the row-wise pass deletes a batch's log rows only from the month the cutoff falls in and later
ones (and DEFAULT); once the pass is complete, every month wholly older than the cutoff is
dropped whole, after copying out the rows of actions that still exist. The retention stays
day-granular: the boundary month is purged row by row, the months before it by DROP.

Deleted, not archived: the table is the engine's working set, and what is worth keeping for
longer (campaign metrics, runs, messages, artifacts) lives in its own tables and files. A
purged action's idempotency key can be used again, so the retention is also the window in which
a repeated enqueue is recognised (at least 8 days: beat re-asserts keys up to 7 days old).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, bindparam, column, delete, select, table
from sqlalchemy.orm import Session

from aicmo.config import get_settings
from aicmo.db import rowcount, session_scope, utcnow
from aicmo.orchestration import partitions
from aicmo.orchestration.models import AOLAction, AOLExecutionLog, AOLSlotWaiter
from aicmo.orchestration.status import TERMINAL_STATUSES

log = logging.getLogger(__name__)

# Literal values, so the planner can match the partial index's predicate even for a
# generic (prepared) plan.
_TERMINAL: BindParameter[Any] = bindparam(
    "terminal_statuses",
    sorted(status.value for status in TERMINAL_STATUSES),
    expanding=True,
    literal_execute=True,
)
_CHUNK = 900  # ids per IN list (SQLite's old 999-variable limit)
_DEFAULT_LOGS = table(partitions.DEFAULT_PARTITION, column("action_id"), column("created_at_utc"))


@dataclass
class PurgeReport:
    cutoff: datetime
    actions: int = 0
    logs: int = 0
    batches: int = 0
    seconds: float = 0.0
    complete: bool = True  # False: the time budget or batch cap ended the run with rows left
    partitions_dropped: list[str] = field(default_factory=list)  # PostgreSQL's log months
    kept_log_rows: int = 0  # rows of surviving actions moved out of a dropped month

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["cutoff"] = self.cutoff.isoformat()
        return found


def batch_query(cutoff: datetime, limit: int) -> Any:
    """The ids of the oldest ``limit`` terminal actions finished before ``cutoff``."""
    return (
        select(AOLAction.id)
        .where(AOLAction.status.in_(_TERMINAL), AOLAction.finished_at_utc < cutoff)
        .order_by(AOLAction.finished_at_utc)
        .limit(limit)
    )


def _delete_logs(
    session: Session, chunk: list[int], keep_from: datetime | None, with_default: bool
) -> int:
    if keep_from is None:  # one plain table
        return rowcount(
            session.execute(
                delete(AOLExecutionLog)
                .where(AOLExecutionLog.action_id.in_(chunk))
                .execution_options(synchronize_session=False)
            )
        )
    # Partitioned: older months are dropped whole later; only DEFAULT may hold older rows.
    deleted = rowcount(
        session.execute(
            delete(AOLExecutionLog)
            .where(
                AOLExecutionLog.action_id.in_(chunk), AOLExecutionLog.created_at_utc >= keep_from
            )
            .execution_options(synchronize_session=False)
        )
    )
    if not with_default:  # no DEFAULT partition: no row can be older than the months
        return deleted
    return deleted + rowcount(
        session.execute(
            delete(_DEFAULT_LOGS).where(
                _DEFAULT_LOGS.c.action_id.in_(chunk), _DEFAULT_LOGS.c.created_at_utc < keep_from
            )
        )
    )


def _purge_batch(
    session: Session,
    cutoff: datetime,
    limit: int,
    keep_from: datetime | None = None,
    with_default: bool = False,
) -> tuple[int, int, int]:
    query = batch_query(cutoff, limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    logs = actions = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        session.execute(
            delete(AOLSlotWaiter)
            .where(AOLSlotWaiter.action_id.in_(chunk))
            .execution_options(synchronize_session=False)
        )
        logs += _delete_logs(session, chunk, keep_from, with_default)
        actions += rowcount(
            session.execute(
                delete(AOLAction)
                .where(
                    AOLAction.id.in_(chunk),
                    AOLAction.status.in_(_TERMINAL),
                    AOLAction.finished_at_utc < cutoff,
                )
                .execution_options(synchronize_session=False)
            )
        )
    return len(ids), actions, logs


def purge_finished(
    older_than: timedelta | None = None,
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    max_batches: int | None = None,
    url: str | None = None,
) -> PurgeReport:
    """Delete terminal actions finished before ``now - older_than`` (default: the retention)
    and their logs, ``batch_size`` at a time, oldest first, until none is left, the time
    budget is spent or ``max_batches`` batches ran."""
    settings = get_settings()
    retention = older_than if older_than is not None else timedelta(days=settings.retention_days)
    limit = batch_size or settings.purge_batch_size
    budget = max_seconds if max_seconds is not None else settings.purge_max_seconds
    report = PurgeReport(cutoff=(now or utcnow()) - retention)
    started = time.monotonic()
    with session_scope(url) as session:
        partitioned = partitions.is_partitioned(session.connection())
        with_default = partitioned and (
            partitions.DEFAULT_PARTITION in partitions.attached(session.connection())
        )
    keep_from = partitions.keep_from(report.cutoff) if partitioned else None
    while True:
        with session_scope(url) as session:
            chosen, actions, logs = _purge_batch(
                session, report.cutoff, limit, keep_from, with_default
            )
        if chosen:
            report.batches += 1
            report.actions += actions
            report.logs += logs
        if chosen < limit:
            break
        if time.monotonic() - started >= budget or (
            max_batches is not None and report.batches >= max_batches
        ):
            report.complete = False
            break
    if partitioned and report.complete:
        # Only now: a month is dropped once none of its actions is left to purge row-wise.
        dropped = partitions.drop_expired(report.cutoff, url)
        report.partitions_dropped, report.kept_log_rows = dropped.dropped, dropped.kept_rows
    report.seconds = round(time.monotonic() - started, 3)
    if report.actions or report.partitions_dropped or not report.complete:
        log.info(
            "purged %d finished action(s) and %d log row(s) older than %s in %d batch(es)%s",
            report.actions,
            report.logs,
            report.cutoff.isoformat(),
            report.batches,
            "" if report.complete else "; more remain for the next run",
            extra={"event": "PURGED", **report.as_dict()},
        )
    return report
