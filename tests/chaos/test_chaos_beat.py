"""Chaos scenario 5: two beats and two sweepers running the whole time, 1,000+ ticks on two
worker processes. One tick per campaign per slot.

The clock is accelerated (a clock minute a real second, tests/integration/test_beat.py), so
sixty one-minute campaigns make sixty ticks a second. Both beats send every fan-out (ticks,
daily metrics, sweeps) twice a clock minute; two more sweepers run in this process. The books:
every slot from the first fan-out to the last must have exactly one successful tick with one
effect (a finished ``cam_orchestrator_runs`` row naming it; the runs table has no unique
constraint on the action, so a second run would show); a tick for a slot no fan-out should
have made counts as a duplicate.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aicmo.cam.schedule import Cadence
from aicmo.db import utcnow
from tests.conftest import BackgroundSweeper, Book
from tests.integration.test_beat import (
    MARGIN,
    accelerated_rig,
    make_campaigns,
    settle_ticks,
    start_together,
    wait_ticks_done,
)
from tests.support.books import Ledger

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("clean", "celery_app")]

PLAN: list[tuple[int, dict[str, Any]]] = [
    (20, {"timezone": "Asia/Dhaka", "tick_every_minutes": 1}),
    (20, {"timezone": "Europe/Berlin", "tick_every_minutes": 1}),
    (20, {"timezone": "America/New_York", "tick_every_minutes": 1}),
    (10, {"timezone": "Australia/Sydney", "tick_every_minutes": 5}),
    (5, {"timezone": "Asia/Dhaka", "tick_every_minutes": None, "tick_daily_at": "00:05"}),
]
RUN_SECONDS = 24.0


def test_5_two_beats_and_two_sweepers(
    database_url: str, book: Book, ledger: Ledger, log_dir: Path
) -> None:
    made = make_campaigns(database_url, PLAN)
    cadences = {
        cid: Cadence(o["timezone"], o.get("tick_every_minutes"), o.get("tick_daily_at"))
        for cid, o in made.items()
    }
    with accelerated_rig(log_dir) as rig, BackgroundSweeper(), BackgroundSweeper():
        start_together([rig.worker(concurrency=1), rig.worker(concurrency=1)])
        spawned = utcnow()
        beats = start_together([rig.beat(), rig.beat()])
        first = utcnow() + timedelta(seconds=MARGIN)
        time.sleep(max(0.0, RUN_SECONDS - (utcnow() - spawned).total_seconds()))
        last = utcnow() - timedelta(seconds=MARGIN)
        assert all(b.alive() for b in beats), "a beat died"
        for process in beats:
            process.stop()
        stopped = utcnow()
        ids = wait_ticks_done(book, timeout=60)
    books = settle_ticks(database_url, cadences, rig.clock, first, last, spawned, stopped)
    ledger.actions, ledger.lost, ledger.duplicated = len(ids), books.lost, books.duplicated
    statuses = Counter(book.statuses(ids).values())
    ledger.dlq = statuses.get("DLQ", 0)
    per_cadence = Counter(
        (c.tick_every_minutes or c.tick_daily_at, len(books.slots[cid]))
        for cid, c in cadences.items()
    )
    ledger.notes.append(
        f"{len(ids)} ticks for {len(made)} campaigns, {books.expected} slots that had to "
        f"tick; (cadence, slots): campaigns "
        f"{dict(per_cadence)}; {books.skipped} found the lease held"
    )
    print("\n" + ledger.notes[-1])
    assert books.problems == [], books.problems[:10]
    assert (ledger.lost, ledger.duplicated) == (0, 0)
    found = ledger.census()
    assert found == [], found[:10]
    assert books.expected >= 1000
    assert statuses == {"SUCCESS": len(ids)}
    # One fan-out run enqueues all campaigns of a cadence at once: they saw the same slots.
    assert len(per_cadence) == len({k for (k, _) in per_cadence})
