"""Under load, nothing lost and nothing done twice: the fault-injection suite (make chaos).

Each scenario puts 1,000+ actions in flight on two worker processes, breaks something on
purpose, then balances the books against the effect ledger (a table with no unique
constraint, so a second run of an action shows up as a second row)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from aicmo.db import session_scope
from aicmo.orchestration.dispatch import Dispatch, get_dispatcher
from aicmo.orchestration.errors import AOLError, EnqueueError
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import BackgroundSweeper, Book
from tests.support import services
from tests.support.books import Ledger
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("clean", "celery_app")]

N = 1000
EFFECT = "T_SLOW_EFFECT"  # isolated queue, 4 s hard limit: a lost run's lease ends after 5 s


def enqueue_load(tag: str, n: int = N, sleep: float = 0.005) -> list[int]:
    with session_scope() as s:
        done = ActionQueue.enqueue_many(
            s, [(EFFECT, {"tag": f"{tag}{i}", "sleep": sleep}) for i in range(n)]
        )
    return [d.action_id for d in done]


def successes(book: Book, ids: list[int]) -> int:
    return sum(1 for s in book.statuses(ids).values() if s == "SUCCESS")


def settle(book: Book, ledger: Ledger, ids: list[int], tag: str, timeout: float = 120) -> None:
    book.wait_all(ids, "SUCCESS", timeout=timeout)
    ledger.settle(book, ids, tag)
    assert (ledger.lost, ledger.duplicated) == (0, 0)
    found = ledger.census()
    assert found == [], found[:10]


def test_1_sigkill_a_worker_repeatedly(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess], log_dir: Path
) -> None:
    ids = enqueue_load("kill", sleep=0.01)
    with BackgroundSweeper():
        for _ in range(3):
            time.sleep(1.5)
            victim = chaos_workers.pop(0)
            victim.kill()
            chaos_workers.append(worker(log_dir, concurrency=1, extra=["-Q", "isolated"]).start())
        settle(book, ledger, ids, "kill")
    ledger.notes.append("3 SIGKILLs")


def test_2a_redis_flushed_mid_run(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess], redis_client: redis.Redis
) -> None:
    ids = enqueue_load("flush")
    with BackgroundSweeper():
        wait_for(lambda: successes(book, ids) > 100, 60, message="the run to be under way")
        redis_client.flushdb()
        settle(book, ledger, ids, "flush")


def test_2b_redis_restarted_mid_run(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess]
) -> None:
    ids = enqueue_load("rrestart")
    with BackgroundSweeper():
        wait_for(lambda: successes(book, ids) > 100, 60, message="the run to be under way")
        services.restart_redis()
        settle(book, ledger, ids, "rrestart")
    assert all(w.alive() for w in chaos_workers), "a worker died with Redis"


def test_3_postgresql_restarted_mid_run(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess]
) -> None:
    ids = enqueue_load("pgrestart")
    with BackgroundSweeper():
        wait_for(lambda: successes(book, ids) > 100, 60, message="the run to be under way")
        services.restart_postgres()
        settle(book, ledger, ids, "pgrestart")
    assert all(w.alive() for w in chaos_workers), "a worker died with PostgreSQL"


def test_4_every_message_published_three_times(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess]
) -> None:
    ids = enqueue_load("thrice")
    get_dispatcher().publish([Dispatch(i, EFFECT) for i in ids] * 2)
    with BackgroundSweeper():
        settle(book, ledger, ids, "thrice")


def test_6_poison_action_kills_its_worker_every_time(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess], redis_client: redis.Redis
) -> None:
    ids = enqueue_load("poisoned")
    with session_scope() as s:
        poison = ActionQueue.enqueue_action(s, "T_KILL", {"tag": "poison"}).id
    with BackgroundSweeper():
        settle(book, ledger, ids, "poisoned")
        action = book.wait_status(poison, "DLQ", timeout=60)
    ledger.dlq = 1
    assert action.attempts == action.max_attempts
    time.sleep(1)
    assert book.events(poison).count("CLAIMED") == action.max_attempts, "the poison looped"


def test_7_hanging_handler(book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess]) -> None:
    ids = enqueue_load("hung")
    with session_scope() as s:
        hangs = [
            ActionQueue.enqueue_action(s, "T_HANG", {"tag": f"h{n}", "seconds": 30}).id
            for n in range(2)
        ]
    with BackgroundSweeper():
        settle(book, ledger, ids, "hung")
        book.wait_all(hangs, "DLQ", timeout=60)
    ledger.dlq = len(hangs)
    assert all("soft time limit" in (book.action(h).last_error or "") for h in hangs)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BAD_INPUTS: list[tuple[str, Any, dict[str, Any]]] = [
    (EFFECT, {"tag": 123}, {}),  # wrong type
    (EFFECT, {}, {}),  # missing key
    (EFFECT, {"tag": "x", "surprise": 1}, {}),  # unknown key
    (EFFECT, {"tag": "x" * 300_000}, {}),  # huge
    (EFFECT, {"tag": "bad \udcff utf-8"}, {}),  # lone surrogate
    (EFFECT, {"tag": "nul \x00"}, {}),  # NUL
    (EFFECT, {"tag": "x"}, {"not_before": datetime(2030, 1, 1)}),  # naive datetime
    ("T_EFFECT'; DROP TABLE aol_actions; --", {"tag": "x"}, {}),  # SQL-looking type
    ("NO_SUCH_TYPE", {"tag": "x"}, {}),  # unknown type
    (EFFECT, "not an object", {}),
    (EFFECT, {"tag": "x"}, {"idempotency_key": ""}),
    (EFFECT, {"tag": "x", "deep": _nested(50_000)}, {}),  # deeper than Python's recursion
]


def test_8_bad_input_storm(book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess]) -> None:
    good_ids: list[int] = []
    refused: dict[str, int] = {}
    for n in range(N + 200):
        if n % 6 == 5:  # one in six is good; SQL-looking text is just text
            with session_scope() as s:
                payload = {"tag": f"storm{n}'); DELETE FROM test_effects; --"}
                good_ids.append(ActionQueue.enqueue_action(s, EFFECT, payload).id)
            continue
        action_type, payload, options = BAD_INPUTS[n % len(BAD_INPUTS)]
        try:
            with session_scope() as s:
                ActionQueue.enqueue_action(s, action_type, payload, **options)
        except (EnqueueError, AOLError) as exc:
            assert str(exc), "an error without a message"
            refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
        else:
            pytest.fail(f"accepted bad input #{n % len(BAD_INPUTS)}")
    ledger.refused = sum(refused.values())
    assert ledger.refused >= N
    with BackgroundSweeper():
        settle(book, ledger, good_ids, "storm")
    assert set(book.statuses().keys()) == set(good_ids), "a refused enqueue left a row"
    ledger.notes.append(str(refused))


def test_9_fifty_concurrent_producers(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess]
) -> None:
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def produce(p: int) -> None:
        try:
            start.wait()
            for i in range(20):
                with session_scope() as s:
                    new = ActionQueue.enqueue_action(s, EFFECT, {"tag": f"prod{p}-{i}"}).id
                with lock:
                    ids.append(new)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(ids) == 1000
    with BackgroundSweeper():
        settle(book, ledger, ids, "prod")
