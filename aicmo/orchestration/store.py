"""The worker's hot path in SQL: one statement per transition.

Every action costs a claim and an outcome. On PostgreSQL each is a single statement (a
data-modifying CTE: the state change and its execution-log row together), and the claim and
failure statements run in autocommit, so one round trip each. SQLite has no data-modifying
CTEs: there the same two writes run as two statements in one short transaction.

On PostgreSQL every time these statements write or compare (lease expiry, due time, retry
time, finished time) is the database's ``now()``: the sweeper compares leases with the same
clock, so a worker whose host clock is minutes off can neither expire early nor run late.
SQLite lives on one host, in-process: its clock is that host's, passed in as parameters.

Plain ``text()`` statements, compiled once: the ORM's unit of work is measurable overhead here
and buys nothing for single-row updates by primary key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, bindparam, text

from aicmo.db import JSONType, UTCDateTime, pooler_connect_args, utcnow
from aicmo.orchestration import batch_store
from aicmo.orchestration.batch_store import EXTEND_PG, EXTEND_SQLITE, Following
from aicmo.orchestration.status import LogEvent

_TIMES = ("now", "lease", "due", "not_before")


def _sql(statement: str, **columns: Any) -> TextClause:
    clause = text(statement)
    params: list[Any] = [
        bindparam(name, type_=UTCDateTime())
        for name in _TIMES
        if re.search(rf"(?<![:\w]):{name}\b", statement)
    ]
    if ":result" in statement:
        params.append(bindparam("result", type_=JSONType))
    if params:
        clause = clause.bindparams(*params)
    if columns:
        return clause.columns(**columns)  # type: ignore[return-value]
    return clause


_CLAIM_WHERE = """
    WHERE id = :id AND action_type = :action_type
      AND status IN ('READY', 'RETRY') AND not_before_utc <= {due}
      AND NOT EXISTS (SELECT 1 FROM aol_control WHERE enabled AND name IN ('pause', :pause_name))
"""
_CLAIM_SET = """
    UPDATE aol_actions SET status = 'RUNNING', attempts = attempts + 1, claimed_by = :token,
        started_at_utc = {now}, finished_at_utc = NULL, lease_expires_at_utc = {lease},
        updated_at_utc = {now}
"""
_CLAIM_RETURNING = (
    "RETURNING id, idempotency_key, payload_json, attempts, max_attempts, not_before_utc,"
    " created_at_utc"
)
_CLAIM_COLUMNS = {
    "payload_json": JSONType,
    "not_before_utc": UTCDateTime(),
    "created_at_utc": UTCDateTime(),
}
_PG_CLOCK = {
    "now": "now()",
    "due": "now() + make_interval(secs => CAST(:skew_seconds AS DOUBLE PRECISION))",
    "lease": "now() + make_interval(secs => CAST(:lease_seconds AS DOUBLE PRECISION))",
}
_SQLITE_CLOCK = {"now": ":now", "due": ":due", "lease": ":lease"}
_CLAIM_PG_UPDATE = (_CLAIM_SET + _CLAIM_WHERE).format(**_PG_CLOCK) + _CLAIM_RETURNING
_CLAIMED_LOG = f"""
    logged AS (
        INSERT INTO aol_execution_logs (action_id, event, attempt, worker, created_at_utc)
        SELECT id, '{LogEvent.CLAIMED.value}', attempts, :token, now() FROM claimed
    )
"""

# The claim commits with synchronous_commit off, for that statement's transaction only
# (set_config(.., true)): it returns without waiting for the WAL flush. A claim lost in a
# PostgreSQL crash is harmless under fencing: the row is READY/RETRY again, the run's outcome
# finds no row RUNNING under its token and keeps nothing (LEASE_LOST: the handler's writes
# roll back), and the sweeper sends the row again. Outcomes commit synchronously, and a WAL
# flush covers every earlier record, so a durable outcome always has its claim durable too.
_ASYNC_COMMIT = "async_commit AS (SELECT set_config('synchronous_commit', 'off', true) AS off)"
CLAIM_PG = _sql(
    f"WITH {_ASYNC_COMMIT}, claimed AS ({_CLAIM_PG_UPDATE}), {_CLAIMED_LOG}"
    " SELECT claimed.* FROM claimed CROSS JOIN async_commit",
    **_CLAIM_COLUMNS,
)
# The same claim, for a retry after a connection died with the first one's reply unread: if
# that one committed, the row is RUNNING under this very token, and it is ours. (Both halves
# read one snapshot: the row is either ours already or claimable, never both.)
RECLAIM_PG = _sql(
    f"""
    WITH {_ASYNC_COMMIT}, mine AS (
        SELECT id, idempotency_key, payload_json, attempts, max_attempts, not_before_utc,
            created_at_utc
        FROM aol_actions WHERE id = :id AND status = 'RUNNING' AND claimed_by = :token
    ),
    claimed AS ({_CLAIM_PG_UPDATE}), {_CLAIMED_LOG}
    SELECT mine.* FROM mine CROSS JOIN async_commit
    UNION ALL SELECT claimed.* FROM claimed CROSS JOIN async_commit
    """,
    **_CLAIM_COLUMNS,
)
CLAIM_SQLITE = _sql(
    (_CLAIM_SET + _CLAIM_WHERE).format(**_SQLITE_CLOCK) + _CLAIM_RETURNING, **_CLAIM_COLUMNS
)

_LOG_COLUMNS = (
    "action_id, event, attempt, worker, duration_ms, error, artifact_ref, artifact_sha256,"
    " details_json, created_at_utc"
)
_LOG_VALUES = (
    ":event, :attempt, :token, :duration_ms, :error, :artifact_ref, :artifact_sha256,"
    " :details, :now"
)
INSERT_LOG = _sql(f"INSERT INTO aol_execution_logs ({_LOG_COLUMNS}) VALUES (:id, {_LOG_VALUES})")
# In INSERT .. SELECT, PostgreSQL types untyped parameters as text: cast them.
_LOG_VALUES_PG = (
    "CAST(:event AS VARCHAR), CAST(:attempt AS INTEGER), CAST(:token AS VARCHAR),"
    " CAST(:duration_ms AS DOUBLE PRECISION), CAST(:error AS TEXT),"
    " CAST(:artifact_ref AS TEXT), CAST(:artifact_sha256 AS VARCHAR),"
    " CAST(:details AS JSONB), CAST(:now AS TIMESTAMPTZ)"
)

_SUCCESS_SET = """
    UPDATE aol_actions SET status = 'SUCCESS', result_json = :result, last_error = NULL,
        finished_at_utc = {now}, lease_expires_at_utc = NULL, updated_at_utc = {now}
    WHERE id = :id AND status = 'RUNNING' AND claimed_by = :token
    RETURNING id
"""
# statement_timestamp(), not now(): a handler's transaction may have begun long before.
_PG_STATEMENT_NOW = "statement_timestamp()"
_LOG_VALUES_PG_NOW = _LOG_VALUES_PG.replace("CAST(:now AS TIMESTAMPTZ)", _PG_STATEMENT_NOW)
_SUCCESS_PG = f"""
    WITH done AS ({_SUCCESS_SET.format(now=_PG_STATEMENT_NOW)}){{extend}}
    INSERT INTO aol_execution_logs ({_LOG_COLUMNS})
    SELECT id, {_LOG_VALUES_PG_NOW} FROM done
    RETURNING action_id
"""
SUCCESS_PG = _sql(_SUCCESS_PG.format(extend=""))
# A batched action's SUCCESS also extends its batch's waiting leases (batch_store.py).
SUCCESS_BATCH_PG = _sql(_SUCCESS_PG.format(extend="," + EXTEND_PG))
# ... and, unless it is the batch's last, commits without waiting for the WAL flush. The
# batch's last outcome commits synchronously, and a flush writes all WAL before it, so the
# message is acked only once the whole batch is durable. What a PostgreSQL crash can lose
# before that is the last few SUCCESS transactions, each whole: the handler's writes with
# it (exactly once still holds: both or neither), the row RUNNING under a token whose lease
# ends (the sweeper sends it again) or READY (the claim was lost too). The action runs
# again, as after a worker killed before its commit: external effects are at least once,
# with ctx.idempotency_key, as everywhere. A worker crash loses nothing of this: only the
# database's own crash drops unflushed commits (PostgreSQL: synchronous_commit).
SUCCESS_BATCH_ASYNC_PG = _sql(
    _SUCCESS_PG.format(extend="," + EXTEND_PG + ", " + _ASYNC_COMMIT).replace(
        "FROM done\n", "FROM done CROSS JOIN async_commit\n"
    )
)
SUCCESS_SQLITE = _sql(_SUCCESS_SET.format(now=":now"))

# The retry time is now + delay on the database's clock; ``queue_retry``: the task layer
# sends the retry message itself (within the horizon), so it counts as queued at that time.
_FAILURE_SET = """
    UPDATE aol_actions SET status = :status, last_error = :error, lease_expires_at_utc = NULL,
        attempts = attempts - :refund,
        updated_at_utc = {now},
        finished_at_utc = CASE WHEN :finishing = 1 THEN {now} END,
        not_before_utc = COALESCE({retry_at}, not_before_utc),
        queued_at_utc = CASE WHEN :retrying = 1
            THEN CASE WHEN :queue_retry = 1 THEN {retry_at} END
            ELSE queued_at_utc END
    WHERE id = :id AND status = 'RUNNING' AND claimed_by = :token
    RETURNING id, not_before_utc
"""
_FAILURE_PG = f"""
    WITH changed AS ({
    _FAILURE_SET.format(
        now=_PG_STATEMENT_NOW,
        retry_at=f"{_PG_STATEMENT_NOW} + make_interval(secs => CAST(:delay AS DOUBLE PRECISION))",
    )
}),{{extend}}
    logged AS (
        INSERT INTO aol_execution_logs ({_LOG_COLUMNS})
        SELECT CAST(:id AS BIGINT),
            CASE WHEN EXISTS (SELECT 1 FROM changed) THEN CAST(:event AS VARCHAR)
                 ELSE CAST(:lost_event AS VARCHAR) END,
            CAST(:attempt AS INTEGER), CAST(:token AS VARCHAR),
            CAST(:duration_ms AS DOUBLE PRECISION), CAST(:error AS TEXT), NULL, NULL,
            CAST(:details AS JSONB), {_PG_STATEMENT_NOW}
        RETURNING event
    )
    SELECT logged.event, changed.not_before_utc FROM logged LEFT JOIN changed ON true
"""
FAILURE_PG = _sql(_FAILURE_PG.format(extend=""), not_before_utc=UTCDateTime())
FAILURE_BATCH_PG = _sql(_FAILURE_PG.format(extend=EXTEND_PG + ","), not_before_utc=UTCDateTime())
FAILURE_SQLITE = _sql(
    _FAILURE_SET.format(now=":now", retry_at=":not_before"), not_before_utc=UTCDateTime()
)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    idempotency_key: str
    payload_json: dict[str, Any]
    attempts: int
    max_attempts: int
    not_before_utc: datetime
    created_at_utc: datetime


def _log_params(**values: Any) -> dict[str, Any]:
    base = {
        "duration_ms": None,
        "error": None,
        "artifact_ref": None,
        "artifact_sha256": None,
        "details": None,
    }
    base.update(values)
    if base["details"] is not None:
        import json

        base["details"] = json.dumps(base["details"])
    return base


class StoreUnavailable(Exception):
    """The database could not be reached for a hot-path statement."""


def _pyformat(clause: Any) -> str:
    """The same SQL with psycopg's %(name)s placeholders."""
    text_clause = clause.element if hasattr(clause, "element") else clause
    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", r"%(\1)s", text_clause.text)


CLAIM_PG_RAW = _pyformat(CLAIM_PG)
RECLAIM_PG_RAW = _pyformat(RECLAIM_PG)
SUCCESS_PG_RAW = _pyformat(SUCCESS_PG)
SUCCESS_BATCH_PG_RAW = _pyformat(SUCCESS_BATCH_PG)
SUCCESS_BATCH_ASYNC_PG_RAW = _pyformat(SUCCESS_BATCH_ASYNC_PG)


class DirectConnection:
    """One autocommit psycopg connection, for the two statements every action runs.

    Going through SQLAlchemy (pool checkout and reset, compile-cache lookup, result wrapping)
    costs more CPU than these single-row statements do; a worker process runs one action at
    a time, so one connection per process is all it needs. A lost connection is reopened.
    """

    def __init__(self, engine: Engine) -> None:
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: Any = None

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            try:
                self._conn = psycopg.connect(
                    self._conninfo, autocommit=True, **pooler_connect_args()
                )
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(str(exc)) from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def fetchone(self, sql: str, params: dict[str, Any], *, retry: bool) -> Any:
        """Run one statement. ``retry``: once more on a fresh connection if the first one was
        dead (only for statements whose repeat is harmless)."""
        import psycopg

        for attempt in (1, 2):
            conn = self._connect()
            try:
                with conn.cursor() as cursor:
                    cursor.execute(sql, params)
                    return cursor.fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.close()
                if attempt == 2 or not retry:
                    raise StoreUnavailable(str(exc)) from exc
            except BaseException:
                # Interrupted mid-statement (a soft time limit raises from a signal handler):
                # the connection is left inside that command and would refuse the next one
                # ("another command is already in progress"). Whether it committed is for
                # the fencing token to tell; the connection itself is done.
                self.close()
                raise
        return None


class ActionStore:
    """The statements of one engine, chosen once for its dialect."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        # Autocommit: a single-statement transition is atomic on its own, and skipping
        # BEGIN/COMMIT saves two round trips per transition.
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else engine
        )
        self.direct = DirectConnection(engine) if self.postgres else None

    def claim(
        self,
        action_id: int,
        action_type: str,
        token: str,
        *,
        lease_seconds: float,
        skew_seconds: float,
        reclaim: bool = False,
    ) -> Claimed | None:
        """Claim under ``token`` (made before the UPDATE, so a retry can recognise its own
        claim). ``reclaim``: an earlier try with this token may have committed unanswered."""
        now = utcnow()  # SQLite only: PostgreSQL reads its own clock
        params = {
            "id": action_id,
            "action_type": action_type,
            "pause_name": f"pause:{action_type}",
            "token": token,
            "now": now,
            "due": now + timedelta(seconds=skew_seconds),
            "lease": now + timedelta(seconds=lease_seconds),
            "lease_seconds": lease_seconds,
            "skew_seconds": skew_seconds,
        }
        if self.direct is not None:
            try:
                row = self.direct.fetchone(
                    RECLAIM_PG_RAW if reclaim else CLAIM_PG_RAW, params, retry=False
                )
            except StoreUnavailable:
                # The connection died: the claim may have committed with its reply lost.
                # The retry asks whether the row is RUNNING under this token first.
                row = self.direct.fetchone(RECLAIM_PG_RAW, params, retry=False)
            if row is not None:
                row = (*row[:5], row[5].astimezone(UTC), row[6].astimezone(UTC))
        else:
            with self.engine.begin() as conn:
                row = conn.execute(CLAIM_SQLITE, params).first()
                if row is not None:
                    conn.execute(
                        INSERT_LOG,
                        _log_params(
                            id=action_id,
                            event=LogEvent.CLAIMED.value,
                            attempt=row.attempts,
                            token=token,
                            now=now,
                        ),
                    )
        return Claimed(*row) if row is not None else None

    def running_under(self, action_id: int, token: str) -> Claimed | None:
        """The action if it is RUNNING under ``token`` (a claim whose reply was lost)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                _sql(
                    "SELECT id, idempotency_key, payload_json, attempts, max_attempts,"
                    " not_before_utc, created_at_utc FROM aol_actions"
                    " WHERE id = :id AND status = 'RUNNING' AND claimed_by = :token",
                    **_CLAIM_COLUMNS,
                ),
                {"id": action_id, "token": token},
            ).first()
        return Claimed(*row) if row is not None else None

    def succeed(
        self,
        conn: Connection,
        claimed: Claimed,
        token: str,
        result: dict[str, Any] | None,
        now: datetime,
        duration_ms: float,
        artifact_ref: str | None,
        artifact_sha256: str | None,
        following: Following | None = None,
    ) -> bool:
        """Record SUCCESS on ``conn`` (the handler's transaction). False if the claim is lost.
        ``following``: a batched action's, whose waiting neighbours' leases this extends."""
        params = _log_params(
            id=claimed.id,
            token=token,
            result=result,
            now=now,
            event=LogEvent.SUCCEEDED.value,
            attempt=claimed.attempts,
            duration_ms=duration_ms,
            artifact_ref=artifact_ref,
            artifact_sha256=artifact_sha256,
        )
        if following is not None:
            params.update(following.params())
        if self.postgres:
            statement = SUCCESS_PG
            if following is not None:
                statement = SUCCESS_BATCH_ASYNC_PG if following.rest else SUCCESS_BATCH_PG
            return conn.execute(statement, params).first() is not None
        if following is not None and following.rest:
            conn.execute(EXTEND_SQLITE, params)
        if conn.execute(SUCCESS_SQLITE, params).first() is None:
            return False
        conn.execute(INSERT_LOG, params)
        return True

    def succeed_alone(
        self, claimed: Claimed, token: str, following: Following | None = None, **values: Any
    ) -> bool:
        """SUCCESS for a handler that wrote nothing: no transaction of its own needed."""
        if self.direct is not None:
            from psycopg.types.json import Jsonb

            params = _log_params(
                id=claimed.id,
                token=token,
                event=LogEvent.SUCCEEDED.value,
                attempt=claimed.attempts,
                **values,
            )
            params["result"] = Jsonb(params["result"]) if params["result"] is not None else None
            sql = SUCCESS_PG_RAW
            if following is not None:
                params.update(following.params())
                sql = SUCCESS_BATCH_ASYNC_PG_RAW if following.rest else SUCCESS_BATCH_PG_RAW
            # Not repeated on a dead connection: the first try may have committed.
            return self.direct.fetchone(sql, params, retry=False) is not None
        with self.engine.begin() as conn:
            return self.succeed(conn, claimed, token, following=following, **values)

    def claim_many(
        self,
        ids: list[int],
        action_type: str,
        prefix: str,
        *,
        lease_seconds: float,
        skew_seconds: float,
        reclaim: bool = False,
    ) -> list[Claimed]:
        """Claim every claimable action of ``ids`` in one statement (see batch_store), in id
        order; action N's token is ``prefix + str(N)``."""
        params = batch_store.claim_many_params(
            ids, action_type, prefix, lease_seconds=lease_seconds, skew_seconds=skew_seconds
        )
        if self.direct is not None:
            conn = self.direct._connect()
            sql = batch_store.RECLAIM_MANY_PG if reclaim else batch_store.CLAIM_MANY_PG
            try:
                with conn.cursor() as cursor:
                    cursor.execute(sql, params)
                    rows = [batch_store.normalise_pg_row(row) for row in cursor.fetchall()]
            except Exception as exc:
                import psycopg

                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    self.direct.close()
                    raise StoreUnavailable(str(exc)) from exc
                raise
            rows.sort(key=lambda row: row[0])
        else:
            with self.engine.begin() as sqlite:
                rows = batch_store.claim_many_sqlite(sqlite, params)
        return [Claimed(*row) for row in rows]

    def fail(
        self,
        claimed: Claimed,
        token: str,
        *,
        status: str,
        event: str,
        error: str,
        duration_ms: float,
        retry_delay: float | None,
        queue_retry: bool,
        details: dict[str, Any] | None,
        refund_attempt: bool = False,
        following: Following | None = None,
    ) -> tuple[bool, datetime | None]:
        """Record FAILED/RETRY/DLQ: (kept, the retry time on the database's clock).

        Not kept (and a LEASE_LOST log row) if the claim is lost. ``retry_delay``: seconds
        from now to the retry (RETRY only).
        """
        now = utcnow()
        params = _log_params(
            id=claimed.id,
            token=token,
            status=status,
            event=event,
            retrying=1 if status == "RETRY" else 0,
            queue_retry=1 if queue_retry else 0,
            finishing=0 if status == "RETRY" else 1,
            refund=1 if refund_attempt else 0,
            lost_event=LogEvent.LEASE_LOST.value,
            error=error,
            now=now,
            attempt=claimed.attempts,
            duration_ms=duration_ms,
            delay=retry_delay,
            not_before=None if retry_delay is None else now + timedelta(seconds=retry_delay),
            details=details,
        )
        if following is not None:
            params.update(following.params())
        if self.postgres:
            statement = FAILURE_PG if following is None else FAILURE_BATCH_PG
            with self._autocommit.connect() as conn:
                found = conn.execute(statement, params).first()
            kept = found is not None and found[0] == event
            return kept, found[1] if kept and found is not None else None
        with self.engine.begin() as conn:
            if following is not None and following.rest:
                conn.execute(EXTEND_SQLITE, params)
            changed = conn.execute(FAILURE_SQLITE, params).first()
            conn.execute(
                INSERT_LOG,
                {**params, "event": event if changed is not None else LogEvent.LEASE_LOST.value},
            )
        return changed is not None, changed[1] if changed is not None else None
