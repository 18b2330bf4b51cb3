"""The hot path's statement budget, counted on the wire: a batch of N no-op actions costs one
claim statement and N finish statements, nothing else (issue #18); a batch's claim and every
finish but its last commit without waiting for the WAL flush (synchronous_commit off for
that statement's transaction alone; why: aicmo/orchestration/store.py)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from aicmo.db import get_engine, session_scope
from aicmo.orchestration.batch import run_batch
from aicmo.orchestration.dispatch import get_dispatcher, install_dispatcher
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.registry import registry
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


class CountingCursor(psycopg.Cursor):  # type: ignore[type-arg]
    seen: list[str] = []

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        CountingCursor.seen.append(str(query))
        return super().execute(query, params, **kw)


def test_a_batch_of_n_costs_one_claim_and_n_finishes(database_url: str) -> None:
    # Recorded, not sent: a worker of this session must not run them before this test does.
    real = get_dispatcher()
    install_dispatcher(RecordingDispatcher())
    try:
        with session_scope() as s:
            done = ActionQueue.enqueue_many(s, [("T_NOOP", {"n": i}) for i in range(20)])
    finally:
        install_dispatcher(real)
    ids = [e.action_id for e in done]
    engine = get_engine(database_url)
    executor = Executor(engine=engine)
    direct = executor.store.direct
    assert direct is not None
    direct._connect().cursor_factory = CountingCursor
    through_sqlalchemy: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        through_sqlalchemy.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    CountingCursor.seen = []
    try:
        outcomes = run_batch(executor, ids, "T_NOOP")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 20
    statements = CountingCursor.seen + through_sqlalchemy
    claims = [q for q in statements if "status = 'SUCCESS'" not in q]
    assert len(claims) == 1, "one claim statement for the whole batch"
    assert "set_config('synchronous_commit', 'off', true)" in claims[0]
    finishes = [q for q in statements if "status = 'SUCCESS'" in q]
    # Every finish but the last returns without the WAL flush; the last waits for it, and
    # a flush writes all WAL before it: the batch is durable before its message is acked.
    assert ["synchronous_commit" in q for q in finishes] == [True] * 19 + [False]
    assert len(CountingCursor.seen) + len(through_sqlalchemy) == 1 + 20, (
        CountingCursor.seen[:3],
        through_sqlalchemy[:3],
    )
    # The claim's setting was local to its own transaction: the session is back to the default.
    with direct._connect().cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    assert registry.get("T_NOOP").batching() == 100


def test_a_single_action_costs_one_claim_and_one_finish(database_url: str) -> None:
    real = get_dispatcher()
    install_dispatcher(RecordingDispatcher())
    try:
        with session_scope() as s:
            action_id = ActionQueue.enqueue_action(s, "T_NOOP", {"n": 1}).id
    finally:
        install_dispatcher(real)
    executor = Executor(engine=get_engine(database_url))
    direct = executor.store.direct
    assert direct is not None
    direct._connect().cursor_factory = CountingCursor
    CountingCursor.seen = []
    assert executor.run(action_id, "T_NOOP").kind is OutcomeKind.SUCCEEDED
    assert len(CountingCursor.seen) == 2, CountingCursor.seen
    assert "set_config('synchronous_commit', 'off', true)" in CountingCursor.seen[0]
    assert "synchronous_commit" not in CountingCursor.seen[1], "the outcome waits for fsync"
