"""One action enqueued in a transaction of its own, on PostgreSQL, as one statement.

``ActionQueue.enqueue`` (what ``task.delay`` and ``apply_async`` do) has no caller's
transaction to join, so it needs no session: ``INSERT .. ON CONFLICT DO NOTHING RETURNING id``
on a pooled connection in autocommit mode commits by itself. That is one round trip instead
of three (BEGIN, INSERT, COMMIT), and no ORM object or session machinery, which cost more CPU
than the insert does. The message goes out after that commit, as after any other.

Anything but a new row (the key exists, the connection broke, the database refused the row)
answers None, and the caller goes the session's way with the same key: it reports the
existing action, or raises the database's error, as before. A broken connection also empties
the pool, so that way starts on a fresh one. A connection that broke after the row committed
leaves it READY without a message; the sweeper's lost-message rule sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from aicmo.db import db_clock_psycopg
from aicmo.orchestration.errors import EnqueueError

if TYPE_CHECKING:
    from aicmo.orchestration.queue import PreparedAction

INSERT_PG = (
    "INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,"
    " not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc, queued_at_utc)"
    " VALUES (%(idempotency_key)s, %(action_type)s, %(payload_json)s, %(status)s,"
    " %(not_before_utc)s, %(attempts)s, %(max_attempts)s, %(created_at_utc)s,"
    " %(updated_at_utc)s, %(queued_at_utc)s)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)


def insert_autocommit(
    engine: Engine, prepare: Callable[[datetime], PreparedAction]
) -> tuple[int | None, PreparedAction | None]:
    """Insert ``prepare(now)``'s row (``now``: the database's clock), committed on its own.
    Returns the new id (None: not inserted, see above) and what ``prepare`` returned (None if
    it was not reached). ``prepare``'s own errors (an invalid payload) are raised as they are."""
    import psycopg
    from psycopg.types.json import Jsonb

    raw = engine.raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    prepared: PreparedAction | None = None
    healthy = False  # give the connection back to the pool, or drop it
    try:
        driver.autocommit = True
        now = db_clock_psycopg(engine, driver)
        prepared = prepare(now)
        row = prepared.row(now)
        with driver.cursor() as cursor:
            cursor.execute(INSERT_PG, {**row, "payload_json": Jsonb(row["payload_json"])})
            found = cursor.fetchone()
        healthy = True
        return (int(found[0]) if found else None), prepared
    except psycopg.Error:
        healthy = not (driver.broken or driver.closed)
        if not healthy:
            # The server went away (a restart, a pooler's timeout): the pool's other idle
            # connections are as dead as this one. SQLAlchemy drops them all on a disconnect
            # it sees itself; this one it did not see, so the session's way, next, would
            # take another dead one.
            engine.dispose()
        return None, prepared
    except EnqueueError:
        healthy = True
        raise
    finally:
        # Anything else (a signal handler raising mid-statement) may have left the connection
        # inside the command: it is not given back.
        if healthy:
            try:
                driver.autocommit = False  # the pool's connections are transactional
            except psycopg.Error:
                healthy = False
        if not healthy:
            raw.invalidate()
        raw.close()
