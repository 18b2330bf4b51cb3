"""A worker SIGKILLed in the middle of a batch message: only the unfinished actions of that
batch run again (kills workers only; Redis and PostgreSQL are left alone)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aicmo.db import session_scope
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import BackgroundSweeper, Book
from tests.support.books import Ledger
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("clean", "celery_app")]

EFFECT = "T_SLOW_EFFECT"  # isolated queue, 4 s hard limit, 1 s margin: leases of 5 s


def test_10_sigkill_mid_batch_reruns_only_the_unfinished(
    book: Book, ledger: Ledger, chaos_workers: list[CeleryProcess], log_dir: Path
) -> None:
    with session_scope() as s:
        done = ActionQueue.enqueue_many(
            s, [(EFFECT, {"tag": f"mid{i}", "sleep": 0.02}) for i in range(400)]
        )
    ids = [d.action_id for d in done]  # four batch messages of 100, about 2 s each
    victim = chaos_workers.pop(0)
    child = victim.children()[0].pid
    mine = f"/{child}/"

    def victim_rows() -> list[tuple[int, str, int, object]]:
        with session_scope() as s:
            return [
                tuple(row)
                for row in s.execute(
                    select(
                        AOLAction.id, AOLAction.status, AOLAction.attempts, AOLAction.started_at_utc
                    ).where(AOLAction.id.in_(ids), AOLAction.claimed_by.contains(mine))
                )
            ]

    wait_for(
        lambda: sum(1 for r in victim_rows() if r[1] == "SUCCESS") >= 20,
        60,
        message="the victim to be well into its batch",
    )
    victim.kill()
    chaos_workers.append(worker(log_dir, concurrency=1, extra=["-Q", "isolated"]).start())
    at_kill = victim_rows()  # frozen: the victim can write no more
    finished = {r[0] for r in at_kill if r[1] != "RUNNING"}
    running = [r for r in at_kill if r[1] == "RUNNING"]
    started = [r[0] for r in running if r[3] is not None]
    assert running, "the kill came after the batch was over"
    assert len(started) <= 1, "one action of a batch runs at a time"

    with BackgroundSweeper():
        book.wait_all(ids, "SUCCESS", timeout=120)
    ledger.settle(book, ids, "mid")
    assert (ledger.lost, ledger.duplicated) == (0, 0)
    found = ledger.census()
    assert found == [], found[:10]

    with session_scope() as s:
        claims: dict[int, int] = {}
        for (action_id,) in s.execute(
            select(AOLExecutionLog.action_id).where(
                AOLExecutionLog.action_id.in_(ids), AOLExecutionLog.event == "CLAIMED"
            )
        ):
            claims[action_id] = claims.get(action_id, 0) + 1
        attempts = dict(
            s.execute(select(AOLAction.id, AOLAction.attempts).where(AOLAction.id.in_(ids))).all()
        )
    again = {i for i, n in claims.items() if n > 1}
    assert again == {r[0] for r in running}, "exactly the unfinished ones ran again"
    assert not again & finished, "a finished action ran again"
    for action_id, _, _, _ in running:
        # The one that was running spent an attempt; the waiting ones got theirs back.
        assert attempts[action_id] == (2 if action_id in started else 1), action_id
    time.sleep(0.5)
    ledger.notes.append(f"killed mid-batch: {len(finished)} done, {len(running)} re-run")
