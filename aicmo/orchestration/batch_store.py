"""The batch's statements: many actions of one type claimed in one statement.

A batch message carries up to ``batch_size`` ids. Its claim makes every claimable one RUNNING
in one statement, each under its own fencing token (``<batch token>#<id>``) and with its own
attempt count and CLAIMED log row. The handlers then run one after another, in id order, and
each finish (SUCCESS, RETRY, FAILED, DLQ: still one statement per action) also

* renews the lease of the next action (its lease then covers its run: start + hard limit +
  margin) and of those waiting their turn (same tokens only) once less than the hard limit
  plus half the margin is left of theirs: a live batch never sees a waiting action expire
  (a finish comes at least once per hard limit), a dead batch hides its actions for one
  lease, not for ``batch_size`` of them, and a waiting row is rewritten once per half
  margin rather than by every finish before its turn;
* marks the next one as started (``started_at_utc``). The claim marks only the first. A
  RUNNING action with no start never ran: when its lease expires (the worker died), the
  sweeper gives its attempt back (aicmo.orchestration.sweeper), so a poison action that kills
  its worker spends only its own attempts, not those of the innocent actions batched with it.

The claim commits with ``synchronous_commit=off`` (that statement only, ``set_config(..,
true)``): it returns without waiting for the WAL flush. A claim lost in a PostgreSQL crash is
harmless under fencing: the row is back to READY/RETRY, the run's outcome statement finds no
row RUNNING under its token and keeps nothing (LEASE_LOST, the handler's writes roll back),
and the sweeper sends the row again. Every outcome commits synchronously, and a WAL flush
covers all earlier records, so a durable outcome always has a durable claim before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import bindparam, text

from aicmo.db import JSONType, UTCDateTime, utcnow
from aicmo.orchestration.status import LogEvent

TOKEN_SEPARATOR = "#"

_CLAIMABLE = """
    id = ANY(CAST(%(ids)s AS BIGINT[])) AND action_type = %(action_type)s
    AND status IN ('READY', 'RETRY')
    AND not_before_utc <= now() + make_interval(secs => CAST(%(skew_seconds)s AS DOUBLE PRECISION))
    AND NOT EXISTS (SELECT 1 FROM aol_control WHERE enabled AND name IN ('pause', %(pause_name)s))
"""
_LEASE_PG = "make_interval(secs => CAST(%(lease_seconds)s AS DOUBLE PRECISION))"
_MY_TOKEN = "CAST(%(prefix)s AS VARCHAR) || CAST({table}id AS VARCHAR)"
_COLUMNS = (
    "id, idempotency_key, payload_json, attempts, max_attempts, not_before_utc, created_at_utc"
)

# The rows are locked in id order (FOR UPDATE re-checks each against its latest version, as
# the single claim's UPDATE does), numbered, and the first is marked started.
_CLAIM_MANY_BODY = f"""
cfg AS (SELECT set_config('synchronous_commit', 'off', true) AS off),
pick AS (
    SELECT id, row_number() OVER (ORDER BY id) AS rn
    FROM (SELECT id FROM aol_actions WHERE {_CLAIMABLE} ORDER BY id FOR UPDATE) locked
),
claimed AS (
    UPDATE aol_actions a SET status = 'RUNNING', attempts = a.attempts + 1,
        claimed_by = {_MY_TOKEN.format(table="a.")},
        started_at_utc = CASE WHEN pick.rn = 1 THEN now() END,
        finished_at_utc = NULL, lease_expires_at_utc = now() + {_LEASE_PG},
        updated_at_utc = now()
    FROM pick WHERE a.id = pick.id
    RETURNING a.id, a.idempotency_key, a.payload_json, a.attempts, a.max_attempts,
        a.not_before_utc, a.created_at_utc
),
logged AS (
    INSERT INTO aol_execution_logs (action_id, event, attempt, worker, created_at_utc)
    SELECT id, '{LogEvent.CLAIMED.value}', attempts, {_MY_TOKEN.format(table="")}, now()
    FROM claimed
)
"""
_CLAIMED_ROWS = "SELECT claimed.* FROM claimed CROSS JOIN cfg"
CLAIM_MANY_PG = f"WITH {_CLAIM_MANY_BODY} {_CLAIMED_ROWS}"
# After a claim whose reply was lost: rows RUNNING under this batch's tokens are ours. (One
# snapshot: a row is either ours already or claimable, never both.)
RECLAIM_MANY_PG = f"""
WITH mine AS (
    SELECT {_COLUMNS} FROM aol_actions
    WHERE id = ANY(CAST(%(ids)s AS BIGINT[])) AND status = 'RUNNING'
        AND claimed_by = {_MY_TOKEN.format(table="")}
), {_CLAIM_MANY_BODY} {_CLAIMED_ROWS} UNION ALL SELECT * FROM mine
"""

# The extension every finish of a batched action carries (PostgreSQL: one more CTE of the
# same statement; SQLite: one more statement of the same transaction).
EXTEND_PG = """
    extended AS (
        UPDATE aol_actions SET
            lease_expires_at_utc = statement_timestamp()
                + make_interval(secs => CAST(:lease_seconds AS DOUBLE PRECISION)),
            started_at_utc = CASE WHEN id = CAST(:next_id AS BIGINT)
                THEN statement_timestamp() ELSE started_at_utc END
        WHERE id = ANY(CAST(:rest AS BIGINT[])) AND status = 'RUNNING'
            AND claimed_by = CAST(:prefix AS VARCHAR) || CAST(id AS VARCHAR)
            AND (id = CAST(:next_id AS BIGINT) OR lease_expires_at_utc < statement_timestamp()
                + make_interval(secs => CAST(:renew_below AS DOUBLE PRECISION)))
    )
"""
EXTEND_SQLITE = text(
    "UPDATE aol_actions SET lease_expires_at_utc = :lease,"
    " started_at_utc = CASE WHEN id = :next_id THEN :now ELSE started_at_utc END"
    " WHERE id IN :rest AND status = 'RUNNING' AND claimed_by = :prefix || id"
    " AND (id = :next_id OR lease_expires_at_utc < :renew_at)"
).bindparams(
    bindparam("rest", expanding=True),
    bindparam("lease", type_=UTCDateTime()),
    bindparam("now", type_=UTCDateTime()),
    bindparam("renew_at", type_=UTCDateTime()),
)

_SQLITE_CLAIM = (
    text(
        "UPDATE aol_actions SET status = 'RUNNING', attempts = attempts + 1,"
        " claimed_by = :prefix || id, started_at_utc = NULL, finished_at_utc = NULL,"
        " lease_expires_at_utc = :lease, updated_at_utc = :now"
        " WHERE id IN :ids AND action_type = :action_type AND status IN ('READY', 'RETRY')"
        " AND not_before_utc <= :due AND NOT EXISTS (SELECT 1 FROM aol_control"
        " WHERE enabled AND name IN ('pause', :pause_name))"
        f" RETURNING {_COLUMNS}"
    )
    .bindparams(
        bindparam("ids", expanding=True),
        bindparam("lease", type_=UTCDateTime()),
        bindparam("now", type_=UTCDateTime()),
        bindparam("due", type_=UTCDateTime()),
    )
    .columns(payload_json=JSONType, not_before_utc=UTCDateTime(), created_at_utc=UTCDateTime())
)
_SQLITE_START = text("UPDATE aol_actions SET started_at_utc = :now WHERE id = :id").bindparams(
    bindparam("now", type_=UTCDateTime())
)
_SQLITE_LOG = text(
    "INSERT INTO aol_execution_logs (action_id, event, attempt, worker, created_at_utc)"
    " VALUES (:id, :event, :attempt, :token, :now)"
).bindparams(bindparam("now", type_=UTCDateTime()))


def token_of(prefix: str, action_id: int) -> str:
    return f"{prefix}{action_id}"


@dataclass(frozen=True, slots=True)
class Following:
    """What a batched action's finish also does for the actions waiting behind it."""

    prefix: str  # the batch's token prefix: action N's token is prefix + str(N)
    rest: tuple[int, ...]  # ids still waiting, in run order (the first is the next to start)
    lease_seconds: float  # the type's lease: hard time limit + margin
    # A waiting lease is renewed only once less than this is left of it (the next one's
    # always). Above the hard time limit, so none can end before the next finish of a live
    # batch; below the lease, so a row is rewritten once per (lease - renew_below) seconds,
    # not by every finish (a batch of 100 would otherwise write 4,950 row versions).
    renew_below: float

    def params(self) -> dict[str, Any]:
        now = utcnow()  # SQLite only: PostgreSQL reads its own clock
        return {
            "prefix": self.prefix,
            "rest": list(self.rest),
            "next_id": self.rest[0] if self.rest else None,
            "lease_seconds": self.lease_seconds,
            "renew_below": self.renew_below,
            "lease": now + timedelta(seconds=self.lease_seconds),
            "renew_at": now + timedelta(seconds=self.renew_below),
            "now": now,
        }


def claim_many_params(
    ids: Sequence[int],
    action_type: str,
    prefix: str,
    *,
    lease_seconds: float,
    skew_seconds: float,
) -> dict[str, Any]:
    now = utcnow()
    return {
        "ids": list(ids),
        "action_type": action_type,
        "pause_name": f"pause:{action_type}",
        "prefix": prefix,
        "lease_seconds": lease_seconds,
        "skew_seconds": skew_seconds,
        "now": now,
        "due": now + timedelta(seconds=skew_seconds),
        "lease": now + timedelta(seconds=lease_seconds),
    }


def claim_many_sqlite(conn: Any, params: dict[str, Any]) -> list[Any]:
    """SQLite: the same claim as two statements of one (serialised) write transaction."""
    rows = sorted(conn.execute(_SQLITE_CLAIM, params).all(), key=lambda row: row[0])
    if rows:
        conn.execute(_SQLITE_START, {"now": params["now"], "id": rows[0][0]})
        conn.execute(
            _SQLITE_LOG,
            [
                {
                    "id": row[0],
                    "event": LogEvent.CLAIMED.value,
                    "attempt": row[3],
                    "token": token_of(params["prefix"], row[0]),
                    "now": params["now"],
                }
                for row in rows
            ],
        )
    return rows


def normalise_pg_row(row: Any) -> tuple[Any, ...]:
    return (*row[:5], row[5].astimezone(UTC), row[6].astimezone(UTC))
