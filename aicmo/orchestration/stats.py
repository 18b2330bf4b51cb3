"""What an operator watches: queue depth by type and status, the oldest waiting action,
the dead-letter queue, pauses, and when beat last swept.

``collect`` answers from small queries (counts per status from an index, estimates for a
status of millions: aicmo.orchestration.counts; a MIN), so it is cheap enough to scrape every
few seconds at any table size. ``prometheus_text`` renders it in the Prometheus text format
(``aicmo stats --prometheus``). The sweep task records a heartbeat here after every sweep,
which is how ``aicmo health`` knows beat (and a worker to run its sweeps) is alive.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.db import db_now, session_scope, utcnow
from aicmo.orchestration.counts import count_by_type_and_status
from aicmo.orchestration.models import AOLAction, AOLControl
from aicmo.orchestration.status import WAITING_STATUSES, ActionStatus

WAITING = {status.value for status in WAITING_STATUSES}
HEARTBEAT_PREFIX = "heartbeat:"
SWEEP_HEARTBEAT = "aol.sweep"


@dataclass(frozen=True)
class Heartbeat:
    name: str
    at: datetime
    by: str | None
    details: dict[str, Any] | None

    def age_seconds(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or utcnow()) - self.at).total_seconds())


@dataclass
class Stats:
    at: datetime
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, status) -> n
    oldest_ready_age_seconds: float | None = None
    oldest_ready_age_by_type: dict[str, float] = field(default_factory=dict)
    paused: list[str] = field(default_factory=list)  # "all" or action types
    last_sweep: Heartbeat | None = None
    known_types: list[str] = field(default_factory=list)
    estimated: list[str] = field(default_factory=list)  # statuses counted by the planner

    @property
    def set_aside(self) -> dict[str, int]:
        """Waiting actions of types the registry does not know (type -> count): the sweeper
        leaves them out of every batch. Empty when no known types were given."""
        if not self.known_types:
            return {}
        known = set(self.known_types)
        found: dict[str, int] = {}
        for (action_type, status), n in self.counts.items():
            if action_type not in known and status in WAITING and n:
                found[action_type] = found.get(action_type, 0) + n
        return dict(sorted(found.items()))

    @property
    def types(self) -> list[str]:
        return sorted({t for t, _ in self.counts} | set(self.known_types))

    def by_status(self) -> dict[str, int]:
        totals = {status.value: 0 for status in ActionStatus}
        for (_, status), n in self.counts.items():
            totals[status] = totals.get(status, 0) + n
        return totals

    def by_type(self, action_type: str) -> dict[str, int]:
        return {s.value: self.counts.get((action_type, s.value), 0) for s in ActionStatus}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def dlq_size(self) -> int:
        return self.by_status()[ActionStatus.DLQ.value]

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "total": self.total,
            "by_status": self.by_status(),
            "by_type": {t: self.by_type(t) for t in self.types},
            "dlq_size": self.dlq_size,
            "oldest_ready_age_seconds": _round(self.oldest_ready_age_seconds),
            "oldest_ready_age_by_type": {
                t: _round(age) for t, age in sorted(self.oldest_ready_age_by_type.items())
            },
            "paused": self.paused,
            "set_aside": self.set_aside,
            "estimated_statuses": self.estimated,
            "last_sweep": None
            if self.last_sweep is None
            else {
                "at": self.last_sweep.at.isoformat(),
                "age_seconds": _round(self.last_sweep.age_seconds(self.at)),
                "by": self.last_sweep.by,
                "report": self.last_sweep.details,
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def collect(
    session: Session, now: datetime | None = None, known_types: Iterable[str] = ()
) -> Stats:
    """Counts by (type, status), age of the oldest due READY action, pauses, last sweep.

    Ages are measured on the database's clock, the one the rows were written with."""
    now = now or db_now(session)
    stats = Stats(at=now, known_types=sorted(known_types))
    # Exact per status from the index, or the planner's estimate for a status of millions.
    stats.counts, stats.estimated = count_by_type_and_status(session)
    # "Waiting since": a READY action is due at not_before_utc (its retry time after a
    # retry); one scheduled a little ahead (within the dispatch horizon) is not late yet.
    for action_type, oldest in session.execute(
        select(AOLAction.action_type, func.min(AOLAction.not_before_utc))
        .where(AOLAction.status == ActionStatus.READY, AOLAction.not_before_utc <= now)
        .group_by(AOLAction.action_type)
    ):
        if oldest is None:
            continue
        if oldest.tzinfo is None:  # func.min loses the column type on some backends
            oldest = oldest.replace(tzinfo=now.tzinfo)
        stats.oldest_ready_age_by_type[action_type] = max(0.0, (now - oldest).total_seconds())
    if stats.oldest_ready_age_by_type:
        stats.oldest_ready_age_seconds = max(stats.oldest_ready_age_by_type.values())
    for name in session.scalars(select(AOLControl.name).where(AOLControl.enabled)):
        if name == "pause":
            stats.paused.append("all")
        elif name.startswith("pause:"):
            stats.paused.append(name.split(":", 1)[1])
    stats.paused.sort()
    stats.last_sweep = read_heartbeat(session, SWEEP_HEARTBEAT)
    return stats


# -- heartbeats ----------------------------------------------------------------------------


def _heartbeat_insert(session: Session, values: dict[str, Any]) -> Any:
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(AOLControl).values(values)
    return stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "reason": stmt.excluded.reason,
            "updated_by": stmt.excluded.updated_by,
            "updated_at_utc": stmt.excluded.updated_at_utc,
        },
    )


def record_heartbeat(name: str, details: dict[str, Any] | None = None) -> None:
    """Upsert ``heartbeat:<name>`` in aol_control (never enabled, so never a pause flag)."""
    values = {
        "name": HEARTBEAT_PREFIX + name,
        "enabled": False,
        "reason": json.dumps(details, default=str) if details is not None else None,
        "updated_by": f"{socket.gethostname()}/{os.getpid()}",
    }
    with session_scope() as session:
        # The database's clock: `aicmo health` on another host compares this with its now().
        values["updated_at_utc"] = db_now(session)
        session.execute(_heartbeat_insert(session, values))


def read_heartbeat(session: Session, name: str) -> Heartbeat | None:
    row = session.get(AOLControl, HEARTBEAT_PREFIX + name)
    if row is None:
        return None
    details: dict[str, Any] | None = None
    if row.reason:
        try:
            loaded = json.loads(row.reason)
            details = loaded if isinstance(loaded, dict) else {"value": loaded}
        except ValueError:
            details = {"text": row.reason}
    return Heartbeat(name=name, at=row.updated_at_utc, by=row.updated_by, details=details)


# -- Prometheus ----------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(stats: Stats) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    metric("aicmo_actions", "gauge", "Actions in aol_actions by type and status.")
    for action_type in stats.types:
        for status, n in stats.by_type(action_type).items():
            lines.append(f'aicmo_actions{{type="{_label(action_type)}",status="{status}"}} {n}')
    metric(
        "aicmo_queue_depth",
        "gauge",
        "Actions waiting to run (PENDING, READY, RETRY) by type and status.",
    )
    for action_type in stats.types:
        counts = stats.by_type(action_type)
        for status in ("PENDING", "READY", "RETRY"):
            lines.append(
                f'aicmo_queue_depth{{type="{_label(action_type)}",status="{status}"}} '
                f"{counts[status]}"
            )
    metric("aicmo_dlq_size", "gauge", "Actions in the dead-letter queue.")
    lines.append(f"aicmo_dlq_size {stats.dlq_size}")
    metric(
        "aicmo_oldest_ready_age_seconds",
        "gauge",
        "Seconds the oldest due READY action of each type has waited (0 when none).",
    )
    for action_type in stats.types:
        age = stats.oldest_ready_age_by_type.get(action_type, 0.0)
        lines.append(f'aicmo_oldest_ready_age_seconds{{type="{_label(action_type)}"}} {age:.3f}')
    metric(
        "aicmo_set_aside",
        "gauge",
        "Waiting actions of a type this process does not know (never sent until it is back).",
    )
    for action_type, n in stats.set_aside.items():
        lines.append(f'aicmo_set_aside{{type="{_label(action_type)}"}} {n}')
    metric("aicmo_paused", "gauge", "1 while a pause is in force (scope: all, or a type).")
    lines.append(f'aicmo_paused{{scope="all"}} {int("all" in stats.paused)}')
    for scope in stats.paused:
        if scope != "all":
            lines.append(f'aicmo_paused{{scope="{_label(scope)}"}} 1')
    metric(
        "aicmo_last_sweep_age_seconds",
        "gauge",
        "Seconds since the sweeper last ran (beat sends aol.sweep); -1 when it never ran.",
    )
    sweep_age = stats.last_sweep.age_seconds(stats.at) if stats.last_sweep else -1.0
    lines.append(f"aicmo_last_sweep_age_seconds {sweep_age:.3f}")
    return "\n".join(lines) + "\n"
