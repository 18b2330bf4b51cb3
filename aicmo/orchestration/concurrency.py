"""Concurrency limits per key: at most N RUNNING actions per key value, on every host.

A type declares ``Concurrency(field, limit)`` in the registry; the key of an action is
``<TYPE>:<field>=<payload value>``. Each key has ``limit`` slot rows in ``aol_slots``.

The claim (one statement on PostgreSQL) takes a free slot with ``FOR UPDATE SKIP LOCKED`` and
claims the action only if it got one; two claimers can never hold one slot, so never more
than ``limit`` holders. A claim that finds no free slot parks the action in the same
statement: PENDING, no attempt spent, ``not_before`` at now + ``AICMO_CONCURRENCY_RECHECK_SECONDS``
(a safety net only) and a row in ``aol_slot_waiters``. When a holder finishes (any outcome)
the executor frees its slot and wakes the oldest waiter of that key (READY, due now, one
message) in one statement: waiters are woken by releases, not found by polling.

A waiter row goes when its action is claimed, woken, cancelled, replayed or purged; the
wake-ups skip a row whose action no longer waits, and the sweeper deletes such rows.

Slots whose holder is no longer RUNNING under that claim (a worker killed: the sweeper's
lease expiry moved its action on; or a claimer that took a slot and then lost the race for
the action) are freed by the sweeper (:func:`free_stale`), which wakes a waiter for each.

Types with no concurrency key never touch these tables: their claim is unchanged.
SQLite (one host, one writer at a time): the same steps as separate statements in one
write transaction, which SQLite serialises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, text

from aicmo.config import get_settings
from aicmo.db import UTCDateTime, utcnow
from aicmo.orchestration import store as st
from aicmo.orchestration.dispatch import Dispatch, Dispatcher
from aicmo.orchestration.registry import ActionType
from aicmo.orchestration.status import LogEvent

log = logging.getLogger(__name__)

WAITING_ERROR = "waiting for a concurrency slot of "

# A woken waiter: (action id, action type, broker priority from its row).
Woken = tuple[int, str, int | None]


@dataclass(frozen=True, slots=True)
class KeyedClaim:
    claimed: st.Claimed | None
    key: str | None  # None: the action was not claimable at all
    parked: bool = False


def _key_sql(dialect: str) -> str:
    if dialect == "postgresql":
        return (
            "CAST(%(action_type)s AS TEXT) || ':' || %(field)s || '='"
            " || COALESCE(payload_json->>%(field)s, '')"
        )
    return (
        ":action_type || ':' || :field || '='"
        " || COALESCE(json_extract(payload_json, '$.' || :field), '')"
    )


_PG_WHERE = st._CLAIM_WHERE.format(**st._PG_CLOCK)
# The engine's own claim, made conditional on the slot taken in the same statement.
_PG_CLAIM_IF_SLOT = st._CLAIM_PG_UPDATE.replace(
    "RETURNING", "AND EXISTS (SELECT 1 FROM slot) RETURNING", 1
)
_PG_RECHECK = "now() + make_interval(secs => CAST(%(recheck)s AS DOUBLE PRECISION))"

CLAIM_KEYED_PG = st._pyformat(
    st._sql(
        f"""
    WITH target AS (
        SELECT id, {{key}} AS ckey FROM aol_actions {_PG_WHERE}
    ),
    made AS (
        -- Only for a key whose top slot is missing (new, or its limit raised): not `limit`
        -- conflicting inserts on every claim.
        INSERT INTO aol_slots (key, slot)
        SELECT t.ckey, g FROM target t, generate_series(1, CAST(:limit AS INTEGER)) g
        WHERE NOT EXISTS (
            SELECT 1 FROM aol_slots s0 WHERE s0.key = t.ckey AND s0.slot = CAST(:limit AS INTEGER)
        )
        ON CONFLICT DO NOTHING RETURNING key
    ),
    slot AS (
        UPDATE aol_slots SET action_id = :id, token = :token, taken_at_utc = now()
        WHERE (key, slot) IN (
            SELECT s.key, s.slot FROM aol_slots s JOIN target t ON s.key = t.ckey
            WHERE s.slot <= CAST(:limit AS INTEGER) AND s.token IS NULL
            ORDER BY s.slot LIMIT 1 FOR UPDATE OF s SKIP LOCKED
        )
        RETURNING key
    ),
    claimed AS ({_PG_CLAIM_IF_SLOT}),
    {st._CLAIMED_LOG},
    unwait AS (
        DELETE FROM aol_slot_waiters
        WHERE action_id = :id AND EXISTS (SELECT 1 FROM claimed)
    ),
    waits AS (
        INSERT INTO aol_slot_waiters (action_id, key, since_utc)
        SELECT t.id, t.ckey, now() FROM target t WHERE NOT EXISTS (SELECT 1 FROM slot)
        ON CONFLICT (action_id) DO NOTHING
    ),
    parked AS (
        UPDATE aol_actions SET status = 'PENDING', queued_at_utc = NULL,
            not_before_utc = {_PG_RECHECK.replace("%(recheck)s", ":recheck")},
            last_error = '{WAITING_ERROR}' || (SELECT ckey FROM target),
            updated_at_utc = now()
        WHERE id = :id AND status IN ('READY', 'RETRY')
          AND EXISTS (SELECT 1 FROM target) AND NOT EXISTS (SELECT 1 FROM slot)
        RETURNING id
    )
    SELECT c.id, c.idempotency_key, c.payload_json, c.attempts, c.max_attempts,
        c.not_before_utc, c.created_at_utc,
        (SELECT ckey FROM target) AS ckey,
        EXISTS (SELECT 1 FROM slot) AS took_slot,
        EXISTS (SELECT 1 FROM parked) AS parked
    FROM (SELECT 1) one LEFT JOIN claimed c ON true
    """
    )
).replace("{key}", _key_sql("postgresql"))

# Free the slot a claim token holds and wake the oldest waiter of its key.
RELEASE_PG = """
    WITH freed AS (
        UPDATE aol_slots SET action_id = NULL, token = NULL, taken_at_utc = NULL
        WHERE token = %(token)s RETURNING key
    ),
    picked AS (
        DELETE FROM aol_slot_waiters WHERE action_id IN (
            SELECT w.action_id FROM aol_slot_waiters w JOIN freed f ON w.key = f.key
            JOIN aol_actions a ON a.id = w.action_id AND a.status = 'PENDING'
            ORDER BY w.action_id LIMIT 1 FOR UPDATE OF w SKIP LOCKED
        ) RETURNING action_id
    )
    UPDATE aol_actions SET status = 'READY', not_before_utc = now(), queued_at_utc = now(),
        last_error = NULL, updated_at_utc = now()
    WHERE id IN (SELECT action_id FROM picked) AND status = 'PENDING'
    RETURNING id, action_type, priority
"""
WAKE_PG = """
    WITH picked AS (
        DELETE FROM aol_slot_waiters WHERE action_id IN (
            SELECT w.action_id FROM aol_slot_waiters w
            JOIN aol_actions a ON a.id = w.action_id AND a.status = 'PENDING'
            WHERE w.key = %(key)s
            ORDER BY w.action_id LIMIT %(n)s FOR UPDATE OF w SKIP LOCKED
        ) RETURNING action_id
    )
    UPDATE aol_actions SET status = 'READY', not_before_utc = now(), queued_at_utc = now(),
        last_error = NULL, updated_at_utc = now()
    WHERE id IN (SELECT action_id FROM picked) AND status = 'PENDING'
    RETURNING id, action_type, priority
"""
# After parking: wake as many waiters as the key has free slots. ``FOR UPDATE`` on every slot
# of the key waits for a release still in flight and reads its result, so a release whose
# statement did not see this waiter is seen here: no waiter is left behind by that race.
WAKE_IF_FREE_PG = """
    WITH slots AS (
        SELECT token FROM aol_slots WHERE key = %(key)s AND slot <= %(limit)s FOR UPDATE
    ),
    picked AS (
        DELETE FROM aol_slot_waiters WHERE action_id IN (
            SELECT w.action_id FROM aol_slot_waiters w
            JOIN aol_actions a ON a.id = w.action_id AND a.status = 'PENDING'
            WHERE w.key = %(key)s
            ORDER BY w.action_id
            LIMIT (SELECT count(*) FROM slots WHERE token IS NULL) FOR UPDATE OF w SKIP LOCKED
        ) RETURNING action_id
    )
    UPDATE aol_actions SET status = 'READY', not_before_utc = now(), queued_at_utc = now(),
        last_error = NULL, updated_at_utc = now()
    WHERE id IN (SELECT action_id FROM picked) AND status = 'PENDING'
    RETURNING id, action_type, priority
"""
# Waiter rows whose action no longer waits (finished, cancelled, purged; an older version
# never deleted them on cancel): the wake-ups skip them already, this keeps the table small.
STALE_WAITERS_SQL = """
    DELETE FROM aol_slot_waiters WHERE NOT EXISTS (
        SELECT 1 FROM aol_actions a
        WHERE a.id = aol_slot_waiters.action_id AND a.status IN ('PENDING', 'READY', 'RETRY')
    )
"""
STALE_SQL = """
    UPDATE aol_slots SET action_id = NULL, token = NULL, taken_at_utc = NULL
    WHERE token IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM aol_actions a
        WHERE a.id = aol_slots.action_id AND a.status = 'RUNNING' AND a.claimed_by = aol_slots.token
    )
    RETURNING key
"""


def key_of(spec: ActionType, payload: dict[str, Any]) -> str:
    assert spec.concurrency is not None
    value = payload.get(spec.concurrency.field)
    return f"{spec.name}:{spec.concurrency.field}={'' if value is None else value}"


def claim(
    store: st.ActionStore,
    spec: ActionType,
    action_id: int,
    token: str,
    *,
    lease_seconds: float,
    skew_seconds: float,
) -> KeyedClaim:
    """The claim of a type with a concurrency key: a slot and the action, or parked."""
    assert spec.concurrency is not None
    recheck = get_settings().concurrency_recheck_seconds
    if store.direct is not None:
        params = {
            "id": action_id,
            "action_type": spec.name,
            "pause_name": f"pause:{spec.name}",
            "token": token,
            "field": spec.concurrency.field,
            "limit": spec.concurrency.limit,
            "lease_seconds": lease_seconds,
            "skew_seconds": skew_seconds,
            "recheck": recheck,
        }
        row = store.direct.fetchone(CLAIM_KEYED_PG, params, retry=False)
        assert row is not None  # the statement always returns one row
        key, took_slot, parked = row[7], row[8], row[9]
        claimed = None
        if row[0] is not None:
            fields = (*row[:5], row[5].astimezone(st.UTC), row[6].astimezone(st.UTC))
            claimed = st.Claimed(*fields)
        elif took_slot:
            release(store, token)  # took a slot, lost the action to another claimer
        if parked:
            # A slot may have freed (or, for a new key, been made) after this statement's
            # snapshot: then nobody else would wake this waiter.
            woken = _fetchall(store, WAKE_IF_FREE_PG, {"key": key, "limit": spec.concurrency.limit})
            _send(woken)
        return KeyedClaim(claimed, key, parked)
    return _claim_sqlite(store.engine, spec, action_id, token, lease_seconds, skew_seconds, recheck)


def _claim_sqlite(
    engine: Engine,
    spec: ActionType,
    action_id: int,
    token: str,
    lease_seconds: float,
    skew_seconds: float,
    recheck: float,
) -> KeyedClaim:
    from datetime import timedelta

    assert spec.concurrency is not None
    now = utcnow()
    params: dict[str, Any] = {
        "id": action_id,
        "action_type": spec.name,
        "pause_name": f"pause:{spec.name}",
        "token": token,
        "field": spec.concurrency.field,
        "limit": spec.concurrency.limit,
        "now": now,
        "due": now + timedelta(seconds=skew_seconds),
        "lease": now + timedelta(seconds=lease_seconds),
        "recheck_at": now + timedelta(seconds=recheck),
    }
    where = st._CLAIM_WHERE.format(**st._SQLITE_CLOCK)
    with engine.begin() as conn:
        # A write first: SQLite takes its write lock here, so nothing interleaves below.
        conn.execute(text("UPDATE aol_slots SET slot = slot WHERE 0"))
        key = conn.execute(
            st._sql(f"SELECT {_key_sql('sqlite')} FROM aol_actions {where}"), params
        ).scalar()
        if key is None:
            return KeyedClaim(None, None)
        params["key"] = key
        for n in range(1, spec.concurrency.limit + 1):
            conn.execute(
                text("INSERT OR IGNORE INTO aol_slots (key, slot) VALUES (:key, :n)"),
                {"key": key, "n": n},
            )
        took = conn.execute(
            st._sql(
                "UPDATE aol_slots SET action_id = :id, token = :token, taken_at_utc = :now "
                "WHERE rowid = (SELECT rowid FROM aol_slots WHERE key = :key AND slot <= :limit"
                " AND token IS NULL ORDER BY slot LIMIT 1)"
            ),
            params,
        ).rowcount
        if took:
            row = conn.execute(st.CLAIM_SQLITE, params).first()
            assert row is not None  # claimable a statement ago, under the write lock
            conn.execute(
                text("DELETE FROM aol_slot_waiters WHERE action_id = :id"), {"id": action_id}
            )
            conn.execute(
                st.INSERT_LOG,
                st._log_params(
                    id=action_id,
                    event=LogEvent.CLAIMED.value,
                    attempt=row.attempts,
                    token=token,
                    now=now,
                ),
            )
            return KeyedClaim(st.Claimed(*row), key)
        conn.execute(
            st._sql(
                "INSERT OR IGNORE INTO aol_slot_waiters (action_id, key, since_utc) "
                "VALUES (:id, :key, :now)"
            ),
            params,
        )
        conn.execute(
            st._sql(
                "UPDATE aol_actions SET status = 'PENDING', queued_at_utc = NULL, "
                "not_before_utc = :recheck_at, last_error = :error, updated_at_utc = :now "
                "WHERE id = :id"
            ).bindparams(bindparam("recheck_at", type_=UTCDateTime())),
            {**params, "error": WAITING_ERROR + key},
        )
    return KeyedClaim(None, key, parked=True)


def _sqlite_wake(conn: Any, key: str, n: int) -> list[Woken]:
    now = utcnow()
    ids = [
        row[0]
        for row in conn.execute(
            text(
                "SELECT w.action_id FROM aol_slot_waiters w JOIN aol_actions a"
                " ON a.id = w.action_id AND a.status = 'PENDING'"
                " WHERE w.key = :key ORDER BY w.action_id LIMIT :n"
            ),
            {"key": key, "n": n},
        )
    ]
    woken: list[Woken] = []
    for action_id in ids:
        conn.execute(text("DELETE FROM aol_slot_waiters WHERE action_id = :id"), {"id": action_id})
        row = conn.execute(
            st._sql(
                "UPDATE aol_actions SET status = 'READY', not_before_utc = :now, "
                "queued_at_utc = :now, last_error = NULL, updated_at_utc = :now "
                "WHERE id = :id AND status = 'PENDING' RETURNING id, action_type, priority"
            ),
            {"id": action_id, "now": now},
        ).first()
        if row is not None:
            woken.append((row[0], row[1], row[2]))
    return woken


def _send(woken: list[Woken], dispatcher: Dispatcher | None = None) -> None:
    if woken:
        items = [Dispatch(id_, type_, priority=priority) for id_, type_, priority in woken]
        from aicmo.orchestration.queue import publish_now  # the ORM; only when waking

        publish_now(items, dispatcher)


def release(store: st.ActionStore, token: str) -> None:
    """Free the slot ``token`` holds (if any) and wake the oldest waiter of its key."""
    if store.direct is not None:
        woken = _fetchall(store, RELEASE_PG, {"token": token}, durable=False)
    else:
        with store.engine.begin() as conn:
            key = conn.execute(
                text(
                    "UPDATE aol_slots SET action_id = NULL, token = NULL, taken_at_utc = NULL "
                    "WHERE token = :token RETURNING key"
                ),
                {"token": token},
            ).scalar()
            woken = _sqlite_wake(conn, key, 1) if key is not None else []
    _send(woken)


def release_in(conn: Any, token: str) -> list[Woken]:
    """:func:`release` inside the caller's transaction (the SUCCESS of the slot's holder):
    returns the woken waiters, to :func:`send_woken` once that transaction has committed."""
    if conn.dialect.name == "postgresql":
        sql = RELEASE_PG.replace("%(token)s", ":token")
        return [(row[0], row[1], row[2]) for row in conn.execute(text(sql), {"token": token})]
    key = conn.execute(
        text(
            "UPDATE aol_slots SET action_id = NULL, token = NULL, taken_at_utc = NULL "
            "WHERE token = :token RETURNING key"
        ),
        {"token": token},
    ).scalar()
    return _sqlite_wake(conn, key, 1) if key is not None else []


def send_woken(woken: list[Woken]) -> None:
    _send(woken)


def wake(store: st.ActionStore, key: str, n: int) -> None:
    if store.direct is not None:
        woken = _fetchall(store, WAKE_PG, {"key": key, "n": n})
    else:
        with store.engine.begin() as conn:
            woken = _sqlite_wake(conn, key, n)
    _send(woken)


def free_stale(engine: Engine, dispatcher: Dispatcher | None = None) -> int:
    """The sweeper's step: delete waiter rows of actions that no longer wait, free slots whose
    holder is not RUNNING under that claim (its lease expired and the action moved on, or
    the claimer lost the action) and wake a waiter for each freed slot. Returns how many
    slots were freed."""
    with engine.begin() as conn:
        conn.execute(text(STALE_WAITERS_SQL))
        keys = [row[0] for row in conn.execute(text(STALE_SQL))]
        woken: list[Woken] = []
        if keys and engine.dialect.name != "postgresql":
            for key in keys:
                woken += _sqlite_wake(conn, key, 1)
    if keys and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for key in keys:
                woken += [
                    (row[0], row[1], row[2])
                    for row in conn.execute(
                        text(WAKE_PG.replace("%(key)s", ":key").replace("%(n)s", "1")),
                        {"key": key},
                    )
                ]
    _send(woken, dispatcher)
    if keys:
        log.warning("freed %d concurrency slot(s) held by lost claims", len(keys))
    return len(keys)


def _fetchall(
    store: st.ActionStore, sql: str, params: dict[str, Any], *, durable: bool = True
) -> list[Woken]:
    """``durable=False``: commit without waiting for the WAL flush (one fsync less per keyed
    action). Only for the release: if a crash loses it, the slot stays taken by a token whose
    action is no longer RUNNING, which the sweeper's :func:`free_stale` frees (and wakes a
    waiter for), so a lost release only delays, never exceeds a limit."""
    assert store.direct is not None
    conn = store.direct._connect()
    with conn.cursor() as cursor:
        if durable:
            cursor.execute(sql, params)
            return [(row[0], row[1], row[2]) for row in cursor.fetchall()]
        with conn.transaction():
            cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute(sql, params)
            return [(row[0], row[1], row[2]) for row in cursor.fetchall()]
