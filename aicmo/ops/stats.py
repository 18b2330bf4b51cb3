"""What an operator watches: the counts of aicmo.orchestration.stats, plus the overview's
throughput, workers seen and last sweep (each from an index, never a whole-table scan)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from aicmo.db import session_scope
from aicmo.orchestration.models import AOLExecutionLog
from aicmo.orchestration.stats import Stats, collect, prometheus_text
from aicmo.orchestration.status import ActionStatus, LogEvent

FINISH_EVENTS = (LogEvent.SUCCEEDED, LogEvent.FAILED, LogEvent.DEAD_LETTERED)


def stats() -> Stats:
    from aicmo.orchestration.registry import registry

    with session_scope() as session:
        return collect(session, known_types=registry.names())


def stats_prometheus() -> str:
    return prometheus_text(stats())


def overview() -> dict[str, Any]:
    """Queue depth by status, DLQ size, oldest READY age, last hour's throughput, workers
    seen in the last hour and the last sweep."""
    found = stats()
    since = found.at - timedelta(hours=1)
    with session_scope() as session:
        # The execution log's primary key is time-ordered: find the first row of the hour
        # through the index on created_at_utc's twin (id), then read only that hour's rows.
        first_id = _first_log_id_since(session, since)
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
    data = found.as_dict()
    data["finished_last_hour"] = finished
    data["throughput_per_minute"] = round(sum(finished.values()) / 60, 2)
    data["workers_seen_last_hour"] = dict(sorted(workers.items()))
    data["waiting"] = {
        s: data["by_status"][s]
        for s in (
            ActionStatus.PENDING,
            ActionStatus.READY,
            ActionStatus.RUNNING,
            ActionStatus.RETRY,
        )
    }
    return data


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
