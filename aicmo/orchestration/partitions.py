"""Monthly partitions of ``aol_execution_logs`` on PostgreSQL (migration 0010).

The execution log is the largest table and append-only, so on PostgreSQL it is partitioned by
month on ``created_at_utc`` (``aol_execution_logs_YYYYMM``, UTC months) plus a DEFAULT partition
(``aol_execution_logs_default``) so that an insert never fails, whatever its time. SQLite (the
embedded default) keeps one plain table and everything here is a no-op there.

- ``ensure_partitions`` (beat's daily ``aol.purge``, first) makes the current month and
  ``AICMO_LOG_PARTITIONS_AHEAD`` months ahead. A partition is made as a plain table and then
  attached, which locks the parent only in SHARE UPDATE EXCLUSIVE mode (inserts go on); rows
  that had landed in DEFAULT for that month are moved into it first.
- ``drop_expired`` (the purge, after its row-wise pass over ``aol_actions`` is complete) drops
  each partition whose whole month is older than the cutoff. The log's rule is that a row lives
  as long as its action: logs of actions that still exist (kept: not finished, or finished
  within the retention, e.g. a DLQ action replayed weeks later) are copied out first. They are
  found from the action side, as the few surviving actions whose ids lie in the partition's
  ``action_id`` range, and land in DEFAULT (the month is no longer covered), where the purge
  deletes them row-wise once their action goes.

Locks: ``DETACH PARTITION CONCURRENTLY`` is not allowed beside a DEFAULT partition, so a drop
is a plain DETACH + DROP in one short transaction under ``lock_timeout``
(``AICMO_PARTITION_LOCK_TIMEOUT_MS``): the workers' inserts wait at most that long behind it; a
drop that cannot get its lock gives up and the next purge retries. Two maintainers (two beats,
a purge beside an operator) are serialised by a transaction-level advisory lock (safe behind
PgBouncer's transaction pooling); the loser does nothing and every step re-checks the catalog,
so the work is idempotent.

There is no foreign key from the partitioned log to ``aol_actions`` on PostgreSQL: its ON
DELETE CASCADE would delete every log row one by one with its action (no partition would ever
be dropped whole), and detaching or dropping a referencing partition rewrites triggers on
``aol_actions``, locking the engine's hottest table. The purge deletes the logs it has to.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from aicmo.config import get_settings
from aicmo.db import get_engine

log = logging.getLogger(__name__)

TABLE = "aol_execution_logs"
DEFAULT_PARTITION = f"{TABLE}_default"
_MONTHLY = re.compile(rf"^{TABLE}_(\d{{4}})(\d{{2}})$")
# pg_try_advisory_xact_lock key of the log's partition maintenance ("aolpart" in ASCII).
LOCK_KEY = 0x616F6C70617274
# A foreign key the models declare (SQLite keeps it) that PostgreSQL's partitioned log lacks.
PG_ABSENT_FOREIGN_KEY = "fk_aol_execution_logs_action_id_aol_actions"


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"{TABLE}_{month:%Y%m}"


def month_of(name: str) -> datetime | None:
    """The month a partition made here covers, None for DEFAULT or a name not made here."""
    found = _MONTHLY.match(name)
    return datetime(int(found[1]), int(found[2]), 1, tzinfo=UTC) if found else None


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.scalar(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": TABLE}
    )
    return kind == "p"


def attached(conn: Connection) -> list[str]:
    """Names of the partitions attached to the log now."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"
        ),
        {"t": TABLE},
    )
    return [str(r[0]) for r in rows]


def _bounds(month: datetime) -> tuple[str, str]:
    return month.isoformat(), add_months(month, 1).isoformat()


def create_default_partition(conn: Connection) -> None:
    conn.execute(
        text(f"CREATE TABLE IF NOT EXISTS {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT")
    )


def _locked(conn: Connection) -> bool:
    timeout = get_settings().partition_lock_timeout_ms
    conn.execute(text(f"SET LOCAL lock_timeout = '{int(timeout)}ms'"))
    return bool(conn.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}))


def create_month(conn: Connection, month: datetime) -> bool:
    """Make and attach ``month``'s partition in the caller's transaction (False: it exists,
    or another maintainer holds the lock). Rows of that month in DEFAULT move into it."""
    name = partition_name(month)
    if not _locked(conn) or name in attached(conn):
        return False
    lower, upper = _bounds(month)
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))  # a leftover of an attach that failed
    conn.execute(text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)"))
    # The CHECK lets ATTACH skip scanning the new table for rows outside its range.
    conn.execute(
        text(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_range CHECK "
            f"(created_at_utc >= '{lower}' AND created_at_utc < '{upper}')"
        )
    )
    if DEFAULT_PARTITION in attached(conn):
        conn.execute(
            text(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created_at_utc >= :lo "
                f"AND created_at_utc < :hi RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
            {"lo": month, "hi": add_months(month, 1)},
        )
    conn.execute(
        text(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{lower}') TO ('{upper}')"
        )
    )
    return True


def _retrying(what: str, step: Callable[[], bool], attempts: int = 3) -> bool:
    """Run ``step()`` (one transaction), again after a lock timeout; False when it never got
    its lock (the next run tries again)."""
    for attempt in range(attempts):
        try:
            return step()
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            log.info("%s: lock not available (attempt %d)", what, attempt + 1)
            time.sleep(0.2 * (attempt + 1))
    return False


def ensure_partitions(url: str | None = None, *, ahead: int | None = None) -> list[str]:
    """Make the current month's partition and ``ahead`` more (default
    ``AICMO_LOG_PARTITIONS_AHEAD``); the names made. The month is the database's."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return []
    ahead = get_settings().log_partitions_ahead if ahead is None else ahead
    made: list[str] = []
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return []
        current = month_start(conn.scalar(text("SELECT now()")))
        conn.rollback()
        for n in range(ahead + 1):
            month = add_months(current, n)

            def step(month: datetime = month) -> bool:
                with conn.begin():
                    return create_month(conn, month)

            if _retrying(f"creating {partition_name(month)}", step):
                made.append(partition_name(month))
    if made:
        log.info("made execution-log partition(s) %s", ", ".join(made), extra={"made": made})
    return made


@dataclass
class DropReport:
    dropped: list[str] = field(default_factory=list)
    kept_rows: int = 0  # log rows of surviving actions copied into DEFAULT before a drop
    skipped: list[str] = field(default_factory=list)  # lock not available: the next run
    default_orphans: int = 0  # old DEFAULT rows whose action is gone, deleted


def _survivors(conn: Connection, name: str) -> list[int]:
    """Ids of actions that still exist and have log rows in partition ``name``: few (the
    range's other actions were purged), each found by one probe of the partition's index."""
    low, high = conn.execute(text(f"SELECT min(action_id), max(action_id) FROM {name}")).one()
    if low is None:
        return []
    rows = conn.execute(
        text(
            f"SELECT a.id FROM aol_actions a WHERE a.id BETWEEN :lo AND :hi "
            f"AND EXISTS (SELECT 1 FROM {name} l WHERE l.action_id = a.id)"
        ),
        {"lo": low, "hi": high},
    )
    return [int(r[0]) for r in rows]


def _drop(conn: Connection, name: str, report: DropReport) -> bool:
    with conn.begin():
        if not _locked(conn) or name not in attached(conn):
            return False  # another maintainer is at it, or has dropped it
        # Before DETACH takes its ACCESS EXCLUSIVE lock: nothing waits behind this query.
        survivors = _survivors(conn, name)
        conn.execute(text(f"ALTER TABLE {TABLE} DETACH PARTITION {name}"))
        if survivors:
            # Now that the month is no longer covered, these land in DEFAULT.
            kept = conn.execute(
                text(f"INSERT INTO {TABLE} SELECT * FROM {name} WHERE action_id = ANY(:ids)"),
                {"ids": survivors},
            )
            report.kept_rows += max(kept.rowcount, 0)
        conn.execute(text(f"DROP TABLE {name}"))
    return True


def drop_expired(cutoff: datetime, url: str | None = None) -> DropReport:
    """Drop every monthly partition that ends at or before ``cutoff``, keeping the rows of
    actions that still exist. Call it after the actions older than ``cutoff`` are purged."""
    report = DropReport()
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return report
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return report
        expired = [
            name
            for name in attached(conn)
            if (month := month_of(name)) is not None and add_months(month, 1) <= cutoff
        ]
        conn.rollback()
        for name in expired:

            def step(name: str = name) -> bool:
                return _drop(conn, name, report)

            if _retrying(f"dropping {name}", step):
                report.dropped.append(name)
            else:
                report.skipped.append(name)
        has_default = DEFAULT_PARTITION in attached(conn)
        conn.rollback()
        if has_default:
            with conn.begin():
                # Rows of actions purged while they sat in DEFAULT under an old time (an
                # insert for a month without partition, or copied out of a dropped month).
                report.default_orphans = max(
                    conn.execute(
                        text(
                            f"DELETE FROM {DEFAULT_PARTITION} d WHERE d.created_at_utc < :cutoff"
                            " AND NOT EXISTS (SELECT 1 FROM aol_actions a WHERE a.id = d.action_id)"
                        ),
                        {"cutoff": cutoff},
                    ).rowcount,
                    0,
                )
    if report.dropped:
        log.info(
            "dropped execution-log partition(s) %s (%d row(s) of kept actions moved to DEFAULT)",
            ", ".join(report.dropped),
            report.kept_rows,
            extra={"dropped": report.dropped, "kept_rows": report.kept_rows},
        )
    return report


def keep_from(cutoff: datetime) -> datetime:
    """Log rows older than this sit in partitions the purge drops whole: its row-wise pass
    leaves them (except in DEFAULT)."""
    return month_start(cutoff)


def compare_include_name(name: str | None, kind: str) -> bool:
    """For autogenerate (``alembic check``, tests/integration/test_schema.py): the partitions
    are made at run time and are not part of the models."""
    return not (kind == "table" and (name == DEFAULT_PARTITION or month_of(name or "")))


def compare_include_object(dialect: str) -> Callable[..., bool]:
    """For autogenerate: on PostgreSQL the models' log foreign key is absent on purpose."""

    def include(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
        return not (
            dialect == "postgresql"
            and kind == "foreign_key_constraint"
            and name == PG_ABSENT_FOREIGN_KEY
        )

    return include
