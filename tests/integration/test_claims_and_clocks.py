"""Claims that survive a lost reply, and clocks that lie: the database's clock is the only one.

The lost reply is real (a proxy drops the connection once the claim's UPDATE has committed),
and so are the wrong clocks (``faketime`` in front of a real ``celery worker`` and a real
sweeper process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from aicmo.db import create_db_engine, session_scope
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import ROOT, Book
from tests.support.doctor import assert_nothing_stranded
from tests.support.pgproxy import DroppingProxy
from tests.support.processes import worker

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

FAKETIME = shutil.which("faketime") or "/usr/bin/faketime"


@contextmanager
def through_dropping_proxy(database_url: str) -> Iterator[tuple[DroppingProxy, Engine]]:
    """An engine whose connections go through a proxy that can lose a statement's reply."""
    original = make_url(database_url)
    with DroppingProxy((original.host or "127.0.0.1", original.port or 5432)) as proxy:
        url = original.set(host="127.0.0.1", port=proxy.port)
        engine = create_db_engine(url.render_as_string(hide_password=False))
        try:
            yield proxy, engine
        finally:
            engine.dispose()


def test_a_claim_whose_reply_was_lost_is_recognised_as_its_own_by_the_retry(
    book: Book, database_url: str
) -> None:
    with session_scope() as s:
        # The isolated queue: no worker reads it here, so this test's executor is the only one.
        action = ActionQueue.enqueue_action(s, "T_ISOLATED_EFFECT", {"tag": "lost-reply"})
    with through_dropping_proxy(database_url) as (proxy, engine):
        proxy.arm(b"UPDATE aol_actions SET status = 'RUNNING'")
        outcome = Executor(engine=engine).run(action.id, "T_ISOLATED_EFFECT")
        assert proxy.dropped.is_set(), "the claim's reply was never dropped"
    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome
    row = book.action(action.id)
    # One claim, one attempt, no SKIPPED: the retry knew the RUNNING row was its own.
    assert (row.status, row.attempts) == ("SUCCESS", 1)
    assert book.events(action.id) == ["CLAIMED", "SUCCEEDED"]
    assert book.effects("lost-reply") == [("lost-reply", action.id, 1)]
    assert_nothing_stranded()


def test_a_claim_lost_with_the_database_down_is_recognised_by_the_messages_next_delivery(
    book: Book, database_url: str
) -> None:
    """The reply is lost and the reconnect fails too: the task layer retries the message
    later (DatabaseUnavailable); that delivery, in the same worker process, asks with the
    token of the unanswered claim."""
    from aicmo.orchestration.executor import DatabaseUnavailable

    with session_scope() as s:
        action = ActionQueue.enqueue_action(s, "T_ISOLATED_EFFECT", {"tag": "lost-twice"})
    with through_dropping_proxy(database_url) as (proxy, engine):
        executor = Executor(engine=engine)
        proxy.arm(b"UPDATE aol_actions SET status = 'RUNNING'", then_refuse=1)
        with pytest.raises(DatabaseUnavailable):
            executor.run(action.id, "T_ISOLATED_EFFECT")
        assert book.action(action.id).status == "RUNNING"  # committed, unanswered
        outcome = executor.run(action.id, "T_ISOLATED_EFFECT")  # the message's retry
    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome
    assert (book.action(action.id).status, book.action(action.id).attempts) == ("SUCCESS", 1)
    assert book.events(action.id) == ["CLAIMED", "SUCCEEDED"]
    assert book.effects("lost-twice") == [("lost-twice", action.id, 1)]
    assert_nothing_stranded()


def test_a_batch_claim_lost_with_the_database_down_is_recognised_by_the_next_delivery(
    book: Book, database_url: str
) -> None:
    """The same for a batch message, whose claim does not reconnect by itself: the message's
    later deliveries (one more failing while the database is down) claim the batch with the
    unanswered claim's token prefix, so every action keeps one claim and one attempt."""
    from aicmo.orchestration.batch import run_batch
    from aicmo.orchestration.executor import DatabaseUnavailable

    with session_scope() as s:
        ids = [
            e.action_id
            for e in ActionQueue.enqueue_many(
                s, [("T_ISOLATED_EFFECT", {"tag": f"batch-lost-{i}"}) for i in range(3)]
            )
        ]
    with through_dropping_proxy(database_url) as (proxy, engine):
        executor = Executor(engine=engine)
        proxy.arm(b"UPDATE aol_actions a SET status = 'RUNNING'", then_refuse=1)
        for _ in range(2):  # the lost reply, then a delivery while the database is down
            with pytest.raises(DatabaseUnavailable):
                run_batch(executor, ids, "T_ISOLATED_EFFECT")
            assert set(book.statuses(ids).values()) == {"RUNNING"}  # committed, unanswered
        outcomes = run_batch(executor, ids, "T_ISOLATED_EFFECT")  # the message's retry
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 3, outcomes
    for action_id in ids:
        assert (book.action(action_id).status, book.action(action_id).attempts) == ("SUCCESS", 1)
        assert book.events(action_id) == ["CLAIMED", "SUCCEEDED"]
    assert len(book.effects("batch-lost-")) == 3
    assert_nothing_stranded()


SWEEP_LOOP = """
import time, tasks
from aicmo.orchestration.sweeper import Sweeper
sweeper = Sweeper()
while True:
    sweeper.sweep()
    time.sleep(0.3)
"""


def test_a_worker_minutes_behind_and_a_sweeper_minutes_ahead_never_expire_a_live_run(
    book: Book, log_dir: Path
) -> None:
    # T_SLOW_EFFECT's lease is its 4 s hard limit plus a 1 s margin. On the worker's clock
    # that lease would have ended five minutes before it began; on the sweeper's it would
    # end ten minutes before the sweeper looked.
    slow = worker(log_dir, concurrency=2, extra=["-Q", "isolated"], prefix=[FAKETIME, "-f", "-5m"])
    sweeper = subprocess.Popen(
        [FAKETIME, "-f", "+5m", sys.executable, "-c", SWEEP_LOOP],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(log_dir / "fast-sweeper.log").open("ab"),
        # faketime forks its program: stop the whole group, or the sweeper outlives the test.
        start_new_session=True,
    )
    try:
        slow.start()
        ids = []
        with session_scope() as s:
            for n in range(3):
                ids.append(
                    ActionQueue.enqueue_action(
                        s, "T_SLOW_EFFECT", {"tag": f"clock-{n}", "sleep": 1.5}
                    ).id
                )
        book.wait_all(ids, "SUCCESS", timeout=60)
        time.sleep(1.0)  # a few more sweeps by the clock that runs ahead
    finally:
        os.killpg(sweeper.pid, signal.SIGKILL)
        sweeper.wait(timeout=10)
        slow.stop()
    for n, action_id in enumerate(ids):
        row = book.action(action_id)
        assert row.attempts == 1, (row, book.events(action_id))
        # One run, never expired. A hint the sweeper re-sent for an action still queued
        # behind the others (a busy machine) may follow, skipped: it claims nothing.
        events = [e for e in book.events(action_id) if e != "SKIPPED_DUPLICATE"]
        assert events == ["CLAIMED", "SUCCEEDED"], book.events(action_id)
        assert book.effects(f"clock-{n}") == [(f"clock-{n}", action_id, 1)]
    assert_nothing_stranded()


def test_a_handlers_sql_error_keeps_its_bound_parameters_out_of_last_error_and_the_log(
    book: Book,
) -> None:
    from sqlalchemy import select

    from aicmo.orchestration.models import AOLExecutionLog

    pii = "alice.lead@example.com"
    with session_scope() as s:
        action = ActionQueue.enqueue_action(s, "T_SQL_ERROR", {"tag": pii})
    outcome = Executor().run(action.id, "T_SQL_ERROR")
    assert outcome.kind is OutcomeKind.DEAD_LETTERED
    row = book.action(action.id)
    with session_scope() as s:
        logged = list(
            s.scalars(select(AOLExecutionLog.error).where(AOLExecutionLog.action_id == action.id))
        )
    # What Flower shows is this same text (the task raises with the outcome's error).
    for text_ in (row.last_error, outcome.error, *filter(None, logged)):
        assert pii not in text_, text_
    assert "IntegrityError" in row.last_error and "test_effects" in row.last_error


PRODUCER = """
import sys, tasks
from aicmo.db import session_scope
from aicmo.orchestration.queue import ActionQueue
with session_scope() as s:
    print(ActionQueue.enqueue_action(s, "T_ISOLATED_EFFECT", {"tag": sys.argv[1]}).id)
"""


@pytest.mark.parametrize("offset", ["+5m", "-5m"])
def test_a_producer_minutes_off_enqueues_on_the_databases_clock(
    book: Book, log_dir: Path, offset: str
) -> None:
    from aicmo.db import db_now, get_engine

    tag = f"producer{offset}"
    made = subprocess.run(
        [FAKETIME, "-f", offset, sys.executable, "-c", PRODUCER, tag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    action_id = int(made.stdout.strip().splitlines()[-1])
    row = book.action(action_id)
    skew = abs((row.not_before_utc - db_now(get_engine())).total_seconds())
    assert skew < 30, f"due {row.not_before_utc}: {skew:.0f}s off the database's clock"
    process = worker(log_dir, concurrency=1, extra=["-Q", "isolated"]).start()
    try:
        book.wait_status(action_id, "SUCCESS", timeout=30)
    finally:
        process.stop()
    assert book.effects(tag) == [(tag, action_id, 1)]
    assert_nothing_stranded()


# Every process that sends a countdown (a pool child retrying, a producer) has the database
# code loaded; a worker's main process has not and sends none.
ETA_PROBE = """
import aicmo.db
import tasks
message = tasks.app.amqp.as_task_v2("probe", "aol.T_ISOLATED_EFFECT", args=[1], countdown=2)
print(message.headers["eta"])
"""


def test_a_host_minutes_ahead_writes_message_etas_on_the_databases_clock(database_url: str) -> None:
    """Celery turns a countdown (a retry's backoff) into an absolute ETA with the sender's
    clock: stock, a host five minutes ahead sends ETAs five minutes late, and workers on
    right clocks hold those messages that long (found by tests/hosts scenario 3)."""
    from datetime import datetime

    from aicmo.db import db_now, get_engine

    made = subprocess.run(
        [FAKETIME, "-f", "+5m", sys.executable, "-c", ETA_PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    eta = datetime.fromisoformat(made.stdout.strip().splitlines()[-1])
    ahead = (eta - db_now(get_engine())).total_seconds()
    assert 0 < ahead < 30, f"ETA {eta}: {ahead:.0f}s past the database's now (countdown 2 s)"
