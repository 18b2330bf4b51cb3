"""What an operator watches: the counts of aicmo.orchestration.stats, plus the overview's
throughput, workers seen and last sweep (each from an index, never a whole-table scan)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from aicmo.db import session_scope, utcnow
from aicmo.orchestration.counts import count_by_type_and_status
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.stats import Stats, collect, prometheus_text
from aicmo.orchestration.status import ActionStatus, LogEvent

FINISH_EVENTS = (LogEvent.SUCCEEDED, LogEvent.FAILED, LogEvent.DEAD_LETTERED)


def stats() -> Stats:
    from aicmo.orchestration.registry import registry

    with session_scope() as session:
        return collect(session, known_types=registry.names())


def stats_prometheus() -> str:
    return prometheus_text(stats())


# The statuses the overview counts. Each is counted from its own range of the (status,
# action_type) index, so the cost follows the size of that status, never the table (beyond
# counts.EXACT_LIMIT rows it is the planner's estimate): SUCCESS and CANCELLED (nearly every
# row of a big table) are left to the table's estimate.
OVERVIEW_STATUSES = (
    ActionStatus.PENDING,
    ActionStatus.READY,
    ActionStatus.RUNNING,
    ActionStatus.RETRY,
    ActionStatus.FAILED,
    ActionStatus.DLQ,
)


def overview() -> dict[str, Any]:
    """Queue depth by status, DLQ size, oldest READY age, last hour's throughput, workers
    seen in the last hour and the last sweep: no query reads the whole table."""
    from aicmo.orchestration.models import AOLControl
    from aicmo.orchestration.stats import SWEEP_HEARTBEAT, read_heartbeat

    with session_scope() as session:
        now = utcnow()
        by_type: dict[str, dict[str, int]] = {}
        by_status = {status.value: 0 for status in OVERVIEW_STATUSES}
        counts, estimated = count_by_type_and_status(session, OVERVIEW_STATUSES)
        for (action_type, status), n in counts.items():
            by_type.setdefault(action_type, dict.fromkeys(by_status, 0))[status] = n
            by_status[status] += n
        oldest = session.scalar(
            select(func.min(AOLAction.not_before_utc)).where(
                AOLAction.status == ActionStatus.READY, AOLAction.not_before_utc <= now
            )
        )
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        paused = sorted(
            "all" if name == "pause" else name.split(":", 1)[1]
            for name in session.scalars(select(AOLControl.name).where(AOLControl.enabled))
            if name == "pause" or name.startswith("pause:")
        )
        sweep = read_heartbeat(session, SWEEP_HEARTBEAT)
        estimate = _estimated_rows(session)
        first_id = _first_log_id_since(session, now - timedelta(hours=1))
        finished: dict[str, int] = {}
        workers: dict[str, str] = {}
        if first_id is not None:
            for event, n in session.execute(
                select(AOLExecutionLog.event, func.count())
                .where(AOLExecutionLog.id >= first_id, AOLExecutionLog.event.in_(FINISH_EVENTS))
                .group_by(AOLExecutionLog.event)
            ):
                finished[event] = int(n)
            for worker, last in session.execute(
                select(AOLExecutionLog.worker, func.max(AOLExecutionLog.created_at_utc))
                .where(AOLExecutionLog.id >= first_id, AOLExecutionLog.event == LogEvent.CLAIMED)
                .group_by(AOLExecutionLog.worker)
            ):
                if worker:
                    workers[_worker_host(worker)] = str(last)
    return {
        "at": now.isoformat(),
        "by_status": by_status,
        "by_type": dict(sorted(by_type.items())),
        "dlq_size": by_status[ActionStatus.DLQ.value],
        "oldest_ready_age_seconds": None
        if oldest is None
        else round(max(0.0, (now - oldest).total_seconds()), 3),
        "paused": paused,
        "last_sweep": None
        if sweep is None
        else {
            "at": sweep.at.isoformat(),
            "age_seconds": round(sweep.age_seconds(now), 3),
            "by": sweep.by,
        },
        "estimated_actions": estimate,
        "estimated_statuses": estimated,
        "finished_last_hour": finished,
        "throughput_per_minute": round(sum(finished.values()) / 60, 2),
        "workers_seen_last_hour": dict(sorted(workers.items())),
    }


def _estimated_rows(session: Any) -> int:
    """About how many actions the table holds, without counting them: PostgreSQL's planner
    estimate, or the id range on SQLite."""
    from sqlalchemy import text

    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(
            text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'aol_actions'::regclass")
        )
        if value is not None and int(value) >= 0:
            return int(value)
    return int(session.scalar(select(func.max(AOLAction.id))) or 0)


def _worker_host(token: str) -> str:
    # A claim's fencing token is "host/pid/nonce": the worker is host/pid.
    parts = token.split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else token


def _first_log_id_since(session: Any, since: Any) -> int | None:
    """Binary search on the primary key (log rows are appended in time order), so finding
    the hour's first row costs ~log2(n) primary-key lookups instead of a scan."""
    low = session.scalar(select(func.min(AOLExecutionLog.id)))
    high = session.scalar(select(func.max(AOLExecutionLog.id)))
    if low is None or high is None:
        return None

    def at(row_id: int) -> Any:
        return session.execute(
            select(AOLExecutionLog.id, AOLExecutionLog.created_at_utc)
            .where(AOLExecutionLog.id >= row_id)
            .order_by(AOLExecutionLog.id)
            .limit(1)
        ).first()

    last = at(high)
    if last is None or last[1] < since:
        return None
    while low < high:
        middle = (low + high) // 2
        row = at(middle)
        if row is None or row[1] >= since:
            high = middle
        else:
            low = row[0] + 1 if row[0] > middle else middle + 1
    return int(low)
