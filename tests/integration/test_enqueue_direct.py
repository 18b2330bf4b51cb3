"""``task.delay`` on PostgreSQL: one autocommit statement, and every other case as before.

An enqueue with no caller's transaction commits its row by itself on a pooled connection
(:mod:`aicmo.orchestration.enqueue_direct`); a key that exists, a payload the database
refuses or a connection that broke go the session's way, which answers as it always did.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from aicmo.db import get_engine
from aicmo.orchestration.errors import IdempotencyConflict, InvalidPayload
from aicmo.orchestration.queue import ActionQueue
from tests.support.campaigns import recording_dispatcher
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


@pytest.fixture
def sent() -> Iterator[RecordingDispatcher]:
    with recording_dispatcher() as recorder:
        yield recorder


@pytest.fixture
def session_statements(database_url: str) -> Iterator[list[str]]:
    """What went through SQLAlchemy's connections: BEGIN and COMMIT of a session's
    transaction, and its statements (the clock reading left out: it is cached)."""
    seen: list[str] = []
    engine = get_engine(database_url)

    def statement(*args: Any) -> None:
        if "clock_timestamp()" not in str(args[2]):
            seen.append(str(args[2]).split()[0].upper())

    listeners: list[tuple[str, Any]] = [
        ("before_cursor_execute", statement),
        ("begin", lambda *_: seen.append("BEGIN")),
        ("commit", lambda *_: seen.append("COMMIT")),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    yield seen
    for name, listener in listeners:
        event.remove(engine, name, listener)


def row(database_url: str, action_id: int) -> tuple[Any, ...]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        found = conn.execute(
            "SELECT status, idempotency_key, payload_json, queued_at_utc IS NOT NULL,"
            " max_attempts FROM aol_actions WHERE id = %s",
            (action_id,),
        ).fetchone()
    assert found is not None
    return tuple(found)


def test_delay_commits_its_row_in_one_statement_and_then_publishes(
    database_url: str, celery_app: Any, sent: RecordingDispatcher, session_statements: list[str]
) -> None:
    handle = celery_app.tasks["aol.T_NOOP"].delay({"n": 1}, idempotency_key="direct-1")
    assert handle.created
    assert session_statements == []  # no session, no BEGIN/COMMIT: one autocommit INSERT
    # Committed already: another connection sees it, READY and queued, with the type's policy.
    assert row(database_url, handle.action_id) == ("READY", "direct-1", {"n": 1}, True, 3)
    assert sent.ids == [handle.action_id]


def test_the_same_key_again_returns_the_action_and_sends_nothing_more(
    celery_app: Any, sent: RecordingDispatcher, session_statements: list[str]
) -> None:
    first = ActionQueue.enqueue("T_NOOP", {"n": 2}, "direct-2")
    again = ActionQueue.enqueue("T_NOOP", {"n": 2}, "direct-2")
    assert (again.action_id, again.created, first.created) == (first.action_id, False, True)
    assert sent.ids == [first.action_id]
    assert "SELECT" in session_statements  # the existing row was looked up the session's way
    with pytest.raises(IdempotencyConflict, match="a different payload"):
        ActionQueue.enqueue("T_NOOP", {"n": 3}, "direct-2")


def test_an_invalid_payload_is_refused_before_the_database_and_keeps_the_connection(
    database_url: str, celery_app: Any, sent: RecordingDispatcher
) -> None:
    engine = get_engine(database_url)
    ActionQueue.enqueue("T_NOOP", {"n": 0})  # a pooled connection exists
    pooled = engine.pool.checkedin()
    with pytest.raises(InvalidPayload):
        ActionQueue.enqueue("T_NOOP", {"n": "not a number"})
    assert engine.pool.checkedin() == pooled  # given back, not dropped
    assert len(sent.ids) == 1


def test_a_row_the_database_refuses_raises_as_the_session_way_does(
    database_url: str, celery_app: Any, sent: RecordingDispatcher
) -> None:
    """A refusal after validation (here a trigger; in life a constraint added by hand): the
    direct insert gives way, the session's way raises the database's error, nothing is left
    and the connection goes back to the pool."""
    engine = get_engine(database_url)
    ActionQueue.enqueue("T_NOOP", {"n": 0})
    pooled = engine.pool.checkedin()
    admin = psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)
    admin.execute(
        "CREATE FUNCTION refuse_direct() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.idempotency_key = 'direct-refused' THEN RAISE EXCEPTION 'refused by a test';"
        " END IF; RETURN NEW; END $$;"
        "CREATE TRIGGER refuse_direct BEFORE INSERT ON aol_actions"
        " FOR EACH ROW EXECUTE FUNCTION refuse_direct()"
    )
    try:
        # The session's way inserts through the driver too: psycopg's own error.
        with pytest.raises(psycopg.errors.RaiseException, match="refused by a test"):
            ActionQueue.enqueue("T_NOOP", {"n": 5}, "direct-refused")
    finally:
        admin.execute("DROP TRIGGER refuse_direct ON aol_actions; DROP FUNCTION refuse_direct()")
        admin.close()
    assert engine.pool.checkedin() == pooled
    assert len(sent.ids) == 1
    count = psycopg.connect(database_url.replace("+psycopg", "")).execute(
        "SELECT count(*) FROM aol_actions WHERE idempotency_key = 'direct-refused'"
    )
    assert count.fetchone() == (0,)


def test_a_broken_pooled_connection_costs_nothing(
    database_url: str, celery_app: Any, sent: RecordingDispatcher
) -> None:
    """Every idle connection of the pool killed by the server (a PostgreSQL restart, a
    pooler's timeout): the next enqueues still land, once each."""
    first = ActionQueue.enqueue("T_NOOP", {"n": 10}, "direct-10")
    engine = get_engine(database_url)
    # Every idle connection of this process's pool (the shared worker's are left alone).
    idle = [engine.raw_connection() for _ in range(max(2, engine.pool.checkedin()))]
    pids = [raw.driver_connection.info.backend_pid for raw in idle]  # type: ignore[union-attr]
    for raw in idle:
        raw.close()
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
            " FROM unnest(%s::int[]) AS pid",
            (pids,),
        ).fetchone()
    assert killed == (len(pids),) and len(pids) >= 2
    later = [ActionQueue.enqueue("T_NOOP", {"n": n}, f"direct-{n}") for n in range(11, 14)]
    assert all(e.created for e in later)
    assert sent.ids == [first.action_id, *(e.action_id for e in later)]
    for enqueued in later:
        assert row(database_url, enqueued.action_id)[0] == "READY"


def test_eight_threads_delaying_one_key_make_one_action_and_one_message(
    celery_app: Any, sent: RecordingDispatcher
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    start = Barrier(8)
    task = celery_app.tasks["aol.T_NOOP"]

    def delay(_: int) -> tuple[int, bool]:
        start.wait()
        handle = task.delay({"n": 7}, idempotency_key="direct-race")
        return handle.action_id, handle.created

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(delay, range(8)))
    assert len({action_id for action_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert sent.ids == [results[0][0]]
