"""Guarantees 7 and 8, by breaking things on purpose: SIGKILL a worker, flush Redis, a poison
action that kills its process, a handler that hangs. Each test starts its own worker on the
"isolated" queue, so killing it harms nobody else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aicmo.db import session_scope
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import BackgroundSweeper, Book, queue_length
from tests.support.messages import message_ids
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

ISOLATED = ["-Q", "isolated"]


@pytest.fixture
def workers(log_dir: Path) -> Iterator[list[CeleryProcess]]:
    started: list[CeleryProcess] = []
    yield started
    for process in started:
        process.stop()


def start_worker(
    workers: list[CeleryProcess], log_dir: Path, concurrency: int = 2
) -> CeleryProcess:
    process = worker(log_dir, concurrency=concurrency, extra=ISOLATED).start()
    workers.append(process)
    return process


def enqueue_many(action_type: str, payloads: list[dict[str, object]]) -> list[int]:
    with session_scope() as s:
        done = ActionQueue.enqueue_many(s, [(action_type, p) for p in payloads])
    return [d.action_id for d in done]


def test_worker_killed_mid_action_loses_nothing_and_doubles_nothing(
    book: Book, workers: list[CeleryProcess], log_dir: Path
) -> None:
    first = start_worker(workers, log_dir)
    ids = enqueue_many("T_SLOW_EFFECT", [{"tag": f"kill{n}", "sleep": 1.5} for n in range(6)])
    wait_for(lambda: "RUNNING" in book.statuses(ids).values(), 15, message="a running action")
    first.kill()  # SIGKILL to the main process and its pool: nothing gets to clean up
    running = [i for i, s in book.statuses(ids).items() if s == "RUNNING"]
    assert running, "the kill should catch actions mid-run"
    # One enqueue_many: one batch message. Its members waiting their turn are RUNNING too
    # but never started (aicmo.orchestration.batch): they get their attempt back.
    started = {i for i in running if book.action(i).started_at_utc is not None}
    assert len(started) == 1, "a batch runs one action at a time"
    start_worker(workers, log_dir)
    with BackgroundSweeper():
        # Leases are the hard time limit (4 s) + margin (1 s): after that the sweeper
        # hands the killed runs to the new worker.
        book.wait_all(ids, "SUCCESS", timeout=60)
    effects = book.effects("kill")
    assert sorted(action_id for _, action_id, _ in effects) == sorted(ids), "lost or doubled"
    for action_id in running:
        assert "LEASE_EXPIRED" in book.events(action_id)
        assert book.action(action_id).attempts == (2 if action_id in started else 1)


def test_redis_flushed_with_actions_ready_loses_nothing(
    book: Book, workers: list[CeleryProcess], log_dir: Path, redis_client: redis.Redis
) -> None:
    ids = enqueue_many("T_ISOLATED_EFFECT", [{"tag": f"flush{n}"} for n in range(40)])
    assert len(message_ids(redis_client, "isolated")) == 40
    redis_client.flushdb()  # every message gone; the rows are all READY
    start_worker(workers, log_dir)
    time.sleep(1)
    assert set(book.statuses(ids).values()) == {"READY"}, "nothing can run without messages"
    with BackgroundSweeper() as sweeper:
        book.wait_all(ids, "SUCCESS", timeout=60)
    assert any(getattr(r, "broker_reset", False) for r in sweeper.reports)
    assert sorted(a for _, a, _ in book.effects("flush")) == sorted(ids)


def test_redis_restarted_mid_run_loses_nothing(
    book: Book, workers: list[CeleryProcess], log_dir: Path, redis_client: redis.Redis
) -> None:
    """A Redis restart without persistence looks like a flush to everyone connected; workers
    reconnect and the sweeper re-sends from the database. (The real restart of the shared
    server is in the chaos suite; here the data loss is what matters.)"""
    start_worker(workers, log_dir)
    ids = enqueue_many("T_ISOLATED_EFFECT", [{"tag": f"rs{n}", "sleep": 0.05} for n in range(60)])
    wait_for(lambda: "SUCCESS" in book.statuses(ids).values(), 20, message="first successes")
    redis_client.flushdb()
    with BackgroundSweeper():
        book.wait_all(ids, "SUCCESS", timeout=60)
    assert sorted(a for _, a, _ in book.effects("rs")) == sorted(ids)


def test_poison_action_ends_in_dlq_and_the_rest_still_run(
    book: Book, workers: list[CeleryProcess], log_dir: Path, redis_client: redis.Redis
) -> None:
    start_worker(workers, log_dir)
    [poison] = enqueue_many("T_KILL", [{"tag": "poison"}])
    ids = enqueue_many("T_ISOLATED_EFFECT", [{"tag": f"ok{n}"} for n in range(20)])
    with BackgroundSweeper():
        action = book.wait_status(poison, "DLQ", timeout=60)
        book.wait_all(ids, "SUCCESS", timeout=30)
    assert action.attempts == action.max_attempts == 3
    assert "lease expired" in action.last_error
    claims = book.events(poison).count("CLAIMED")
    # No loop: nothing claims it again, and no message for it is left circulating.
    time.sleep(2)
    assert book.events(poison).count("CLAIMED") == claims == 3
    assert queue_length(redis_client, "isolated") == 0
    assert sorted(a for _, a, _ in book.effects("ok")) == sorted(ids)


def test_hanging_handler_is_cut_by_the_soft_time_limit_then_dead_lettered(
    book: Book, workers: list[CeleryProcess], log_dir: Path
) -> None:
    start_worker(workers, log_dir)
    [hung] = enqueue_many("T_HANG", [{"tag": "hang", "seconds": 60}])
    ids = enqueue_many("T_ISOLATED_EFFECT", [{"tag": f"beside{n}"} for n in range(10)])
    book.wait_all(ids, "SUCCESS", timeout=30)
    action = book.wait_status(hung, "DLQ", timeout=30)
    assert action.attempts == 3
    assert action.last_error == "soft time limit of 1s exceeded"
