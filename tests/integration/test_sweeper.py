"""The sweeper on PostgreSQL: cost O(due rows), safe to run beside itself, each step's rule."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.orm import Session

from aicmo.config import get_settings
from aicmo.db import get_engine, session_scope, utcnow
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.sweeper import Sweeper
from tests.conftest import Book
from tests.support.doctor import assert_nothing_stranded
from tests.support.messages import message_ids
from tests.support.processes import beat, wait_for, worker
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


def add_finished_rows(count: int) -> None:
    """Bulk history: finished actions the sweeper must never read."""
    with get_engine().begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,
                    not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc,
                    finished_at_utc, queued_at_utc)
                SELECT 'old-' || n, 'T_NOOP', '{}'::jsonb,
                       (ARRAY['SUCCESS','FAILED','DLQ','CANCELLED'])[1 + n % 4],
                       now() - interval '30 days', 1, 3, now() - interval '30 days',
                       now() - interval '30 days', now() - interval '30 days',
                       now() - interval '30 days'
                FROM generate_series(1, :count) AS n
                """
            ),
            {"count": count},
        )
        conn.execute(text("ANALYZE aol_actions"))


def plans_of(statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    plans = []
    with get_engine().connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for statement, params in statements:
            with raw.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + statement, params)
                plans.append(cursor.fetchone()[0][0]["Plan"])
        raw.rollback()
    return plans


def scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    if plan.get("Relation Name") == "aol_actions" and plan["Node Type"].endswith("Scan"):
        found.append((plan["Node Type"], plan.get("Index Name", "")))
    for child in plan.get("Plans", []):
        found.extend(scans(child))
    return found


def test_a_sweep_reads_indexes_not_the_table(book: Book) -> None:
    add_finished_rows(100_000)
    with session_scope() as s:
        for n in range(20):
            ActionQueue.enqueue_action(
                s, "T_NOOP", {"n": n}, f"due-{n}", utcnow() + timedelta(hours=n + 1)
            )
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "aol_actions" in statement and not statement.lstrip().startswith("INSERT"):
            statements.append((statement, params))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        report = Sweeper(dispatcher=RecordingDispatcher()).sweep(now=utcnow() + timedelta(hours=3))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert report.dispatched == 3  # due within the horizon of "now + 3 h"
    assert len(statements) >= 4
    for (statement, _), plan in zip(statements, plans_of(statements), strict=True):
        for node, index in scans(plan):
            assert node != "Seq Scan", f"table scan in: {statement[:160]}\n{json.dumps(plan)[:400]}"
            assert index, (node, statement[:160])


def test_two_sweepers_at_once_send_each_due_action_once() -> None:
    with session_scope() as s:
        ActionQueue.enqueue_many(
            s,
            [
                {
                    "action_type": "T_NOOP",
                    "payload": {"n": n},
                    "not_before": utcnow() + timedelta(hours=1),
                }
                for n in range(600)
            ],
        )
    later = utcnow() + timedelta(hours=1, seconds=1)
    recorders = [RecordingDispatcher(), RecordingDispatcher()]
    barrier = threading.Barrier(2)

    def run(recorder: RecordingDispatcher) -> None:
        sweeper = Sweeper(dispatcher=recorder)
        sweeper.settings = sweeper.settings.model_copy(update={"sweep_batch_size": 50})
        barrier.wait()
        sweeper.dispatch_due(later)

    threads = [threading.Thread(target=run, args=(r,)) for r in recorders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = recorders[0].ids + recorders[1].ids
    assert len(sent) == 600 and len(set(sent)) == 600
    assert recorders[0].ids and recorders[1].ids, "both sweepers should have taken a share"


def test_expired_lease_on_last_attempt_goes_to_dlq(book: Book, session: Session) -> None:
    with session.begin():
        action = ActionQueue.enqueue_action(
            session, "T_NOOP", {"n": 1}, "last-try", utcnow() + timedelta(hours=1)
        )
        session.execute(
            update(AOLAction)
            .where(AOLAction.id == action.id)
            .values(
                status="RUNNING",
                attempts=3,
                max_attempts=3,
                claimed_by="gone/1/x",
                lease_expires_at_utc=utcnow() - timedelta(seconds=1),
            )
        )
    report = Sweeper(dispatcher=RecordingDispatcher()).sweep()
    assert (report.lease_expired, report.dead_lettered) == (1, 1)
    row = book.action(action.id)
    assert row.status == "DLQ" and row.finished_at_utc is not None
    assert book.events(action.id) == ["LEASE_EXPIRED", "DEAD_LETTERED"]


@pytest.mark.parametrize(("depth", "resent"), [(0, 1), (25, 0)])
def test_lost_message_is_resent_after_one_grace_period_only_when_its_queue_is_empty(
    session: Session, depth: int, resent: int
) -> None:
    with session.begin():
        # On the isolated queue: no worker reads it here, so the row stays READY.
        action = ActionQueue.enqueue_action(session, "T_ISOLATED_EFFECT", {"tag": "l"}, "lost")
    recorder = RecordingDispatcher(depth=depth)
    sweeper = Sweeper(dispatcher=recorder)
    grace = sweeper.settings.resend_grace_seconds
    # Late by more than one grace period, less than the backlog bound.
    report = sweeper.sweep(now=utcnow() + timedelta(seconds=grace * 2.5))
    assert report.resent == resent
    assert recorder.ids == [action.id] * resent


def test_under_a_backlog_a_lost_message_is_resent_once_per_bound_never_snowballing(
    session: Session,
) -> None:
    with session.begin():
        action = ActionQueue.enqueue_action(session, "T_ISOLATED_EFFECT", {"tag": "b"}, "busy")
    recorder = RecordingDispatcher(depth=25)  # the queue never empties
    sweeper = Sweeper(dispatcher=recorder)
    sweeper.settings = sweeper.settings.model_copy(update={"resend_backlog_factor": 5})
    bound = sweeper.settings.resend_grace_seconds * 5
    start = utcnow()
    assert sweeper.sweep(now=start + timedelta(seconds=bound * 0.9)).resent == 0
    # Past the bound: sent again whatever the depth, once; the next sweeps wait a new bound.
    assert sweeper.sweep(now=start + timedelta(seconds=bound + 1)).resent == 1
    for extra in (2, bound * 0.5):
        assert sweeper.sweep(now=start + timedelta(seconds=bound + extra)).resent == 0
    assert sweeper.sweep(now=start + timedelta(seconds=2 * bound + 2)).resent == 1
    assert recorder.ids == [action.id, action.id]


def insert_gone_rows() -> list[int]:
    """Rows of T_GONE, a type a deploy removed: the oldest due, so first in every batch."""
    with get_engine().begin() as conn:
        return list(
            conn.execute(
                text(
                    """
                    INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,
                        not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc,
                        queued_at_utc)
                    SELECT 'gone-' || n, 'T_GONE', '{}'::jsonb,
                           (ARRAY['PENDING','READY','RETRY'])[1 + n % 3],
                           now() - interval '1 hour', 0, 3, now() - interval '1 hour',
                           now() - interval '1 hour', NULL
                    FROM generate_series(1, 3) AS n
                    RETURNING id
                    """
                )
            ).scalars()
        )


def test_rows_of_an_unregistered_type_are_set_aside_and_never_block_the_batch(
    book: Book, redis_client: Any
) -> None:
    from aicmo.orchestration.registry import ActionType, registry
    from aicmo.orchestration.stats import collect, prometheus_text
    from tests.support.actions import NoopPayload, noop

    gone = insert_gone_rows()
    with session_scope() as s:
        known = [
            ActionQueue.enqueue_action(s, "T_ISOLATED_EFFECT", {"tag": f"k{n}"}).id
            for n in range(4)
        ]
        # Their publish was lost before it happened: the sweeper must send them.
        s.execute(update(AOLAction).where(AOLAction.id.in_(known)).values(queued_at_utc=None))
    redis_client.delete("isolated", "gone")
    sweeper = Sweeper()
    sweeper.settings = sweeper.settings.model_copy(update={"sweep_batch_size": 2})
    reports = [sweeper.sweep() for _ in range(2)]
    # Every known row was sent, in sweeps of 2 (each sweep's 2: one batch message).
    assert sorted(message_ids(redis_client, "isolated")) == sorted(known)
    assert [r.set_aside for r in reports] == [3, 3]
    from aicmo.health import run_checks
    from aicmo.ops import doctor

    rows = {i: book.action(i) for i in gone}
    assert {r.status for r in rows.values()} == {"PENDING", "READY", "RETRY"}
    assert all(r.queued_at_utc is None for r in rows.values())
    # Said once per row, with the reason, however many sweeps pass.
    for action_id in gone:
        assert book.events(action_id) == ["SET_ASIDE"]

    with session_scope() as s:
        stats = collect(s, known_types=registry.names())
        findings = doctor.find(s)
    assert stats.as_dict()["set_aside"] == {"T_GONE": 3}
    assert 'aicmo_set_aside{type="T_GONE"} 3' in prometheus_text(stats)
    assert sorted(f.subject for f in findings if f.check == "unknown_type") == [
        f"action {i}" for i in sorted(gone)
    ]
    [stranded] = run_checks(["stranded"])
    assert not stranded.ok and "unknown_type" in stranded.detail

    # A deploy brings the type back: its rows are sent with no one's help.
    registry.register(ActionType("T_GONE", NoopPayload, noop, queue="gone"))
    try:
        report = sweeper.sweep()
        assert report.set_aside == 0 and report.dispatched == 3
    finally:
        registry._types.pop("T_GONE")
    assert sorted(message_ids(redis_client, "gone")) == sorted(gone)


def test_broker_reset_resends_every_waiting_action(session: Session) -> None:
    with session.begin():
        ready = ActionQueue.enqueue_action(session, "T_ISOLATED_EFFECT", {"tag": "r"}, "r1")
        later = ActionQueue.enqueue_action(
            session, "T_ISOLATED_EFFECT", {"tag": "p"}, "r2", utcnow() + timedelta(hours=5)
        )
    recorder = RecordingDispatcher(reset=True)
    report = Sweeper(dispatcher=recorder).sweep()
    assert report.broker_reset and recorder.ids == [ready.id]
    assert later.id not in recorder.ids  # still PENDING: it had no message to lose


def test_under_a_steady_backlog_a_lost_message_is_resent_and_runs(
    book: Book, log_dir: Path, redis_client: Any
) -> None:
    """A real worker that never catches up, real beat: the backlog in "aol" never empties,
    beat's sweeps travel on their own queue, and a READY row whose message was lost still
    runs, once, within the backlog bound (3 grace periods of 2 s here)."""
    env = {"AICMO_RESEND_BACKLOG_FACTOR": "3"}
    processes = [
        worker(log_dir, concurrency=2, env=env, extra=["-Q", f"aol,{get_settings().beat_queue}"]),
        beat(log_dir, env=env),
    ]
    depths: list[int] = []
    stop = threading.Event()

    def feed() -> None:  # keep 30 or more messages waiting, whatever the worker does
        n = 0
        while not stop.is_set():
            depth = int(redis_client.llen("aol"))
            depths.append(depth)
            if depth < 30:
                # One transaction each: single messages (a backlog of batch messages would be
                # twenty times deeper than its length says).
                for i in range(20):
                    with session_scope() as s:
                        ActionQueue.enqueue_action(
                            s, "T_EFFECT", {"tag": f"load-{n + i}", "sleep": 0.2}
                        )
                n += 20
            stop.wait(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        for process in processes:
            process.start()
        feeder.start()
        wait_for(lambda: len(depths) > 5 and depths[-1] >= 20, 30, message="a backlog")
        with get_engine().begin() as conn:
            # Enqueued, its message lost on the way: READY, "sent" now, in no queue.
            lost_id = conn.execute(
                text(
                    """
                    INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,
                        not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc,
                        queued_at_utc)
                    VALUES ('lost-under-load', 'T_EFFECT', '{"tag": "lost"}'::jsonb, 'READY',
                        now(), 0, 3, now(), now(), now())
                    RETURNING id
                    """
                )
            ).scalar_one()
        watched_from = len(depths)
        book.wait_status(lost_id, "SUCCESS", timeout=45)
        during = depths[watched_from:]
    finally:
        stop.set()
        feeder.join(timeout=10)
        for process in processes:
            process.stop()
    assert min(during) > 0, "the backlog drained: this proves nothing about a busy queue"
    assert book.effects("lost") == [("lost", lost_id, 1)]
    assert_nothing_stranded()
