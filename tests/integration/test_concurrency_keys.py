"""Concurrency limits per key, enforced in the claim: real worker processes on PostgreSQL.

T_KEYED (tests/support/actions.py) allows 2 RUNNING per ``account``; each run records how
many of its account were RUNNING when it started (itself included)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aicmo.db import get_engine, session_factory
from aicmo.orchestration import concurrency
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.registry import registry
from aicmo.orchestration.store import ActionStore
from tests.conftest import Book
from tests.support.actions import ISOLATED, KEYED_LIMIT
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = pytest.mark.usefixtures("clean")

WORKERS = 3  # processes, 2 pool children each: 6 runs at once, 3 times the limit


@pytest.fixture
def workers(celery_app: Any, log_dir: Path) -> Iterator[list[CeleryProcess]]:
    started = [worker(log_dir, concurrency=2, extra=["-Q", "aol"]) for _ in range(WORKERS)]
    for process in started:
        process.start()
    yield started
    for process in started:
        process.stop()


class RunningWatch(threading.Thread):
    """Polls the most T_KEYED actions RUNNING per account at once, from outside."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.most: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with get_engine(self.url).connect() as conn:
            while not self.stop.is_set():
                for account, count in conn.execute(
                    text(
                        "SELECT payload_json->>'account', count(*) FROM aol_actions "
                        "WHERE action_type LIKE 'T_KEYED%' AND status = 'RUNNING' GROUP BY 1"
                    )
                ):
                    self.most[account] = max(self.most.get(account, 0), count)
                conn.rollback()
                time.sleep(0.005)


def test_at_most_n_run_per_key_and_waiters_are_woken_by_releases(
    database_url: str, book: Book, workers: list[CeleryProcess]
) -> None:
    watch = RunningWatch(database_url)
    watch.start()
    payloads = [{"account": "a", "tag": f"a{i}"} for i in range(10)]
    payloads += [{"account": "b", "tag": f"b{i}"} for i in range(4)]
    started = time.monotonic()
    with session_factory(database_url)() as s, s.begin():
        ids = [ActionQueue.enqueue_action(s, "T_KEYED", p).id for p in payloads]
    wait_for(
        lambda: set(book.statuses(ids).values()) == {"SUCCESS"},
        60,
        interval=0.2,
        message="every keyed action to run",
    )
    elapsed = time.monotonic() - started
    watch.stop.set()
    watch.join(5)
    assert watch.most.get("a", 0) <= KEYED_LIMIT
    assert watch.most.get("b", 0) <= KEYED_LIMIT
    with session_factory(database_url)() as s:
        seen = [row[0] for row in s.execute(text("SELECT tag FROM test_effects"))]
        attempts = [book.action(i).attempts for i in ids]
    assert len(seen) == len(ids)  # each ran once
    assert max(int(tag.split(":")[1]) for tag in seen) <= KEYED_LIMIT
    assert attempts == [1] * len(ids), "waiting for a slot spent an attempt"
    # 10 runs of 0.3 s two at a time is ~1.5 s of work: a waiter woke when a slot freed,
    # not at the recheck (300 s) nor at a sweep.
    assert elapsed < 30
    with session_factory(database_url)() as s:
        assert s.execute(text("SELECT count(*) FROM aol_slot_waiters")).scalar() == 0
        held = s.execute(text("SELECT count(*) FROM aol_slots WHERE token IS NOT NULL")).scalar()
        assert held == 0


def test_a_slot_held_by_a_killed_worker_is_freed_by_the_lease_expiry(
    database_url: str, book: Book, celery_app: Any, log_dir: Path
) -> None:
    from tests.conftest import BackgroundSweeper

    first = worker(log_dir, concurrency=2, extra=["-Q", ISOLATED])
    first.start()
    second: CeleryProcess | None = None
    try:
        with session_factory(database_url)() as s, s.begin():
            holders = [
                ActionQueue.enqueue_action(s, "T_KEYED_ISOLATED", {"account": "k", "sleep": 6}).id
                for _ in range(KEYED_LIMIT)
            ]
        wait_for(lambda: set(book.statuses(holders).values()) == {"RUNNING"}, 20, message="holders")
        first.kill()  # mid-run: the holders' slots stay taken until their leases (11 s) end
        assert set(book.statuses(holders).values()) == {"RUNNING"}
        second = worker(log_dir, concurrency=2, extra=["-Q", ISOLATED])
        second.start()
        with session_factory(database_url)() as s, s.begin():
            waiters = [
                ActionQueue.enqueue_action(s, "T_KEYED_ISOLATED", {"account": "k", "sleep": 0}).id
                for _ in range(2)
            ]
        wait_for(lambda: set(book.statuses(waiters).values()) == {"PENDING"}, 30, message="parked")
        watch = RunningWatch(database_url)
        watch.start()
        with BackgroundSweeper():
            book.wait_all(holders + waiters, "SUCCESS", timeout=90)
        watch.stop.set()
        watch.join(5)
        assert watch.most.get("k", 0) <= KEYED_LIMIT
        for action_id in holders:
            assert "LEASE_EXPIRED" in book.events(action_id)
        assert [book.action(i).attempts for i in waiters] == [1, 1]
    finally:
        first.stop()
        if second is not None:
            second.stop()


class KeyedSlots:
    """T_KEYED's slots claimed and released in this process, outside any worker: action N
    claims with the token ``tokN``."""

    def __init__(self, url: str) -> None:
        self.store = ActionStore(get_engine(url))
        self.spec = registry.get("T_KEYED")

    def claim(self, action_id: int) -> concurrency.KeyedClaim:
        return concurrency.claim(
            self.store, self.spec, action_id, f"tok{action_id}", lease_seconds=30, skew_seconds=0
        )

    def claim_first(self, action_id: int) -> None:
        """The key's first claim: it makes the key's slot rows, parks and is woken at once,
        so it claims again (PostgreSQL)."""
        if self.claim(action_id).claimed is None:
            assert self.claim(action_id).claimed is not None

    def release(self, action_id: int) -> None:
        concurrency.release(self.store, f"tok{action_id}")


def test_the_same_limit_on_the_embedded_sqlite_path(tmp_path: Path) -> None:
    from aicmo.migrate import upgrade
    from tests.support.campaigns import recording_dispatcher

    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    slots = KeyedSlots(url)
    with recording_dispatcher() as sent, session_factory(url)() as s, s.begin():
        ids = [ActionQueue.enqueue_action(s, "T_KEYED", {"account": "a"}).id for _ in range(3)]
    claims = [slots.claim(i) for i in ids]
    assert [c.claimed is not None for c in claims] == [True, True, False]
    assert claims[2].parked and claims[2].key == "T_KEYED:account=a"
    with session_factory(url)() as s:
        status = s.execute(text("SELECT status FROM aol_actions WHERE id = :i"), {"i": ids[2]})
        assert status.scalar() == "PENDING"
    with recording_dispatcher() as sent:
        slots.release(ids[0])  # the first holder finished
    assert [item.action_id for item in sent.sent] == [ids[2]]  # the waiter, woken
    again = concurrency.claim(
        slots.store, slots.spec, ids[2], "tok-again", lease_seconds=30, skew_seconds=0
    )
    assert again.claimed is not None


def _waiters(url: str) -> list[int]:
    with session_factory(url)() as s:
        return list(s.scalars(text("SELECT action_id FROM aol_slot_waiters ORDER BY action_id")))


def test_a_cancelled_waiter_leaves_no_row_and_holds_up_no_one(
    database_url: str, celery_app: Any
) -> None:
    """In this process, on PostgreSQL: two holders, two parked. Cancelling the first parked
    one deletes its waiter row, and the next release wakes the second; rows a finished or
    purged action left behind (older versions never deleted them) go at the next sweep."""
    from aicmo.orchestration import manager
    from tests.support.campaigns import recording_dispatcher

    slots = KeyedSlots(database_url)
    with recording_dispatcher(), session_factory(database_url)() as s, s.begin():
        ids = [ActionQueue.enqueue_action(s, "T_KEYED", {"account": "w"}).id for _ in range(4)]

    with recording_dispatcher():
        slots.claim_first(ids[0])
        claims = [slots.claim(i) for i in ids[1:]]
    assert [True] + [c.claimed is not None for c in claims] == [True, True, False, False]
    assert _waiters(database_url) == ids[2:]
    with session_factory(database_url)() as s, s.begin():
        manager.cancel(s, ids[2], by="test")
    assert _waiters(database_url) == [ids[3]]
    with recording_dispatcher() as sent:
        slots.release(ids[0])
    assert [item.action_id for item in sent.sent] == [ids[3]]
    assert _waiters(database_url) == []
    # Leftovers: a cancelled action's row and one whose action is gone; a live one stays.
    # Recorded, not sent: the session's worker must not run the live one meanwhile (it did,
    # in CI, and its row then rightly went too).
    with recording_dispatcher(), session_factory(database_url)() as s, s.begin():
        live = ActionQueue.enqueue_action(s, "T_KEYED", {"account": "w"}).id
    with session_factory(database_url)() as s, s.begin():
        s.execute(
            text(
                "INSERT INTO aol_slot_waiters (action_id, key, since_utc) VALUES "
                "(:cancelled, 'T_KEYED:account=w', now()), (987654321, 'T_KEYED:account=w', now()),"
                " (:live, 'T_KEYED:account=w', now())"
            ),
            {"cancelled": ids[2], "live": live},
        )
    with recording_dispatcher():
        concurrency.free_stale(get_engine(database_url))
    assert _waiters(database_url) == [live]


def test_a_slot_is_freed_with_the_success_and_a_failed_release_undoes_nothing(
    database_url: str, celery_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyed handler that used the session frees its slot in the SUCCESS transaction (no
    slot held after the run); if that release fails, the success stands and the release
    after the run frees the slot."""
    from aicmo.orchestration.executor import Executor, OutcomeKind
    from tests.support.campaigns import recording_dispatcher

    def held() -> int:
        with session_factory(database_url)() as s:
            return int(
                s.execute(
                    text(
                        "SELECT count(*) FROM aol_slots"
                        " WHERE key = 'T_KEYED:account=s' AND token IS NOT NULL"
                    )
                ).scalar()
                or 0
            )

    with recording_dispatcher(), session_factory(database_url)() as s, s.begin():
        ids = [
            ActionQueue.enqueue_action(s, "T_KEYED", {"account": "s", "sleep": 0, "tag": t}).id
            for t in ("first", "second", "third")
        ]
    executor = Executor()
    with recording_dispatcher():
        # A key's first claim makes its slot rows, parks and is woken at once: run again.
        if executor.run(ids[0], "T_KEYED").kind is OutcomeKind.WAITING:
            assert executor.run(ids[0], "T_KEYED").kind is OutcomeKind.SUCCEEDED
        assert held() == 0
        released_after: list[str] = []
        real_release = concurrency.release

        def broken(conn: Any, token: str) -> Any:
            raise RuntimeError("release broken on purpose")

        def counting(store: Any, token: str) -> None:
            released_after.append(token)
            real_release(store, token)

        monkeypatch.setattr(concurrency, "release_in", broken)
        monkeypatch.setattr(concurrency, "release", counting)
        assert executor.run(ids[1], "T_KEYED").kind is OutcomeKind.SUCCEEDED
        assert len(released_after) == 1  # the fallback ran ...
        assert held() == 0  # ... and freed the slot
        monkeypatch.undo()
        monkeypatch.setattr(concurrency, "release", counting)
        released_after.clear()
        assert executor.run(ids[2], "T_KEYED").kind is OutcomeKind.SUCCEEDED
        assert released_after == []  # freed in its SUCCESS transaction: no release after
        assert held() == 0
    with session_factory(database_url)() as s:
        statuses = s.execute(
            text("SELECT status FROM aol_actions WHERE id = ANY(:ids)"), {"ids": ids}
        ).scalars()
        assert set(statuses) == {"SUCCESS"}
