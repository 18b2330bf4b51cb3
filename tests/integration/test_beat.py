"""Two real ``celery beat`` processes side by side, on an accelerated clock, with real workers:
every campaign gets exactly one tick per slot and one metrics fetch per local day, and a beat
restarted mid-way (with a moment when no beat runs at all) skips nothing and doubles nothing.

The clock: ``AICMO_BEAT_TEST_CLOCK_*`` makes the fan-out tasks see one clock minute per real
second, starting a few minutes before midnight in Dhaka and Kathmandu, so slots every clock
minute, daily slots and the end of local days all happen within half a minute. Beat's own
entries run on real seconds (``cam.schedule_ticks`` every 0.5 s, i.e. twice a clock minute).
The tests here also serve the chaos suite (tests/chaos/test_chaos_beat.py).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicmo.cam import campaigns, keys
from aicmo.cam.clock import day_bounds, local_date
from aicmo.cam.models import Campaign, OrchestratorRun
from aicmo.cam.schedule import Cadence, ScheduleClock, latest_slot, slots_between
from aicmo.db import session_factory, utcnow
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from tests.conftest import Book
from tests.support import campaigns as support
from tests.support.processes import CeleryProcess, beat, worker

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

SPEED = 60.0  # clock seconds per real second: a clock minute a second
TICKS_EVERY = 0.5  # real seconds between two cam.schedule_ticks of one beat
TOLERANCE = 600.0  # clock seconds (10 real seconds)
MARGIN = 2.5  # real seconds: how late the first and last fan-out runs may be


def next_utc_time(after: datetime, hour: int, minute: int) -> datetime:
    found = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return found if found >= after else found + timedelta(days=1)


@dataclass
class Rig:
    """Workers and beats that share one accelerated clock and a beat queue of their own (a
    worker without the clock, such as the shared one, never runs a fan-out)."""

    log_dir: Path
    clock: ScheduleClock
    queue: str
    env: dict[str, str]
    processes: list[CeleryProcess] = field(default_factory=list)

    def worker(self, concurrency: int = 2) -> CeleryProcess:
        process = worker(
            self.log_dir, concurrency=concurrency, env=self.env, extra=["-Q", f"aol,{self.queue}"]
        )
        self.processes.append(process)
        return process

    def beat(self, schedule_file: Path | None = None) -> CeleryProcess:
        extra = ["-s", str(schedule_file)] if schedule_file else []
        process = beat(self.log_dir, env=self.env, extra=extra)
        self.processes.append(process)
        return process

    def now(self) -> datetime:
        return self.clock.now()

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


def schedule_file(process: CeleryProcess) -> Path:
    """The schedule file a beat process keeps its last runs in (its last ``-s``)."""
    at = len(process.args) - 1 - process.args[::-1].index("-s")
    return Path(process.args[at + 1])


def start_together(processes: list[CeleryProcess]) -> list[CeleryProcess]:
    threads = [support.Thread(p.start) for p in processes]
    for t in threads:
        t.start()
    for t in threads:
        t.join_result(timeout=90)
    return processes


@contextmanager
def accelerated_rig(log_dir: Path) -> Iterator[Rig]:
    """A rig whose clock starts at the next 17:56 UTC (a few clock minutes before midnight in
    Dhaka and Kathmandu) and runs a clock minute a second. Stops its processes on exit."""
    real = utcnow()
    clock = ScheduleClock(real, next_utc_time(real, 17, 56), SPEED)
    queue = f"beat-{uuid.uuid4().hex[:8]}"
    assert clock.real_start is not None and clock.virtual_start is not None
    env = {
        "AICMO_BEAT_TEST_CLOCK_REAL_START": clock.real_start.isoformat(),
        "AICMO_BEAT_TEST_CLOCK_VIRTUAL_START": clock.virtual_start.isoformat(),
        "AICMO_BEAT_TEST_CLOCK_SPEED": str(SPEED),
        "AICMO_BEAT_QUEUE": queue,
        "AICMO_BEAT_TICKS_INTERVAL_SECONDS": str(TICKS_EVERY),
        "AICMO_BEAT_METRICS_INTERVAL_SECONDS": "1",
        "AICMO_BEAT_CATCH_UP_TOLERANCE_SECONDS": str(TOLERANCE),
    }
    found = Rig(log_dir, clock, queue, env)
    try:
        yield found
    finally:
        found.stop_all()


@pytest.fixture
def rig(log_dir: Path) -> Iterator[Rig]:
    with accelerated_rig(log_dir) as found:
        yield found


# -- the books ------------------------------------------------------------------------------


@dataclass
class TickBooks:
    expected: int = 0  # (campaign, slot) pairs that must have ticked
    lost: int = 0  # of those, without a successful tick with one effect
    duplicated: int = 0  # extra effects, and ticks for slots no fan-out should have made
    skipped: int = 0  # ticks that found the campaign's lease held (ran, did nothing)
    slots: dict[int, list[datetime]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def pairs(session: Session, query: Any) -> dict[Any, Any]:
    return {key: value for key, value in session.execute(query)}


class Tick(NamedTuple):
    id: int
    campaign: int
    slot: datetime
    status: str
    outcome: str | None  # "done", "stopped" or "skipped" (the campaign's lease was held)
    succeeded: int  # SUCCEEDED events in its log
    runs: int  # its effect: finished tick runs (cam_orchestrator_runs) naming it
    started: datetime | None  # claimed (the database's clock)
    finished: datetime | None  # its outcome recorded, with its lease released in that commit


def tick_rows(url: str) -> list[Tick]:
    with session_factory(url)() as s:
        succeeded = pairs(
            s,
            select(AOLExecutionLog.action_id, func.count())
            .where(AOLExecutionLog.event == "SUCCEEDED")
            .group_by(AOLExecutionLog.action_id),
        )
        runs = pairs(
            s,
            select(OrchestratorRun.action_id, func.count())
            .where(OrchestratorRun.status.in_(["DONE", "STOPPED"]))
            .group_by(OrchestratorRun.action_id),
        )
        rows = s.execute(
            select(
                AOLAction.id,
                AOLAction.payload_json,
                AOLAction.status,
                AOLAction.result_json,
                AOLAction.started_at_utc,
                AOLAction.finished_at_utc,
            )
            .where(AOLAction.action_type == keys.TICK)
            .order_by(AOLAction.id)
        ).all()
    return [
        Tick(
            row.id,
            int(row.payload_json["campaign_id"]),
            datetime.fromisoformat(row.payload_json["slot"]),
            row.status,
            (row.result_json or {}).get("outcome"),
            succeeded.get(row.id, 0),
            runs.get(row.id, 0),
            row.started_at_utc,
            row.finished_at_utc,
        )
        for row in rows
    ]


# How much later than its outcome's timestamp a tick's commit (which frees its lease) may land.
COMMIT_SLACK = timedelta(seconds=0.5)


def unexplained_skips(ticks: list[Tick]) -> list[Tick]:
    """The skipped ticks that no working tick of their campaign explains.

    A tick is skipped when it finds its campaign's lease held by a live tick. That tick took
    the lease after it was claimed and freed it when its outcome committed, so the skipped
    tick ran inside that window: some tick of the same campaign with an effect was claimed
    before the skipped one finished and finished after the skipped one was claimed. A skip
    with no such tick means a lease outlived its tick (left behind, released late)."""
    working: dict[int, list[Tick]] = defaultdict(list)
    for tick in ticks:
        if tick.runs >= 1 and tick.started and tick.finished:
            working[tick.campaign].append(tick)
    return [
        tick
        for tick in ticks
        if tick.outcome == "skipped"
        and not any(
            holder.started <= tick.finished and tick.started <= holder.finished + COMMIT_SLACK
            for holder in working[tick.campaign]
            if tick.started and tick.finished and holder.started and holder.finished
        )
    ]


def settle_ticks(
    url: str,
    cadences: dict[int, Cadence],
    clock: ScheduleClock,
    first: datetime,
    last: datetime,
    spawned: datetime,
    stopped: datetime,
) -> TickBooks:
    """Compare the ticks found with the clock: every slot from the first fan-out (``first``,
    real time) to the last (``last``) must have ticked once, with one effect; none before the
    beats were spawned or after they stopped may exist.

    A tick may find its campaign's lease held by another tick of the same campaign and do
    nothing ("skipped", the campaign's one-tick-at-a-time rule): allowed only while a tick of
    that campaign that did the work was running (``unexplained_skips``). Two slots of one
    campaign run side by side after a catch-up, and also when the workers fall behind."""
    books = TickBooks()
    found: dict[tuple[int, datetime], list[Tick]] = defaultdict(list)
    ticks = tick_rows(url)
    for tick in ticks:
        found[(tick.campaign, tick.slot)].append(tick)
    unexplained = {tick.id for tick in unexplained_skips(ticks)}
    for cid, cadence in cadences.items():
        low = latest_slot(cadence, clock_at(clock, first))
        high = latest_slot(cadence, clock_at(clock, last))
        must = [low, *slots_between(cadence, low, high)]
        floor = latest_slot(cadence, clock_at(clock, spawned))
        allowed = {floor, *slots_between(cadence, floor, clock_at(clock, stopped))}
        mine = sorted(slot for (c, slot) in found if c == cid)
        books.slots[cid] = mine
        books.expected += len(must)
        for slot in must:
            ticks = found.get((cid, slot), [])
            if not [t for t in ticks if t.status == "SUCCESS" and t.succeeded >= 1 and (
                t.runs >= 1 or t.outcome == "skipped"
            )]:  # fmt: skip
                books.lost += 1
                books.problems.append(f"campaign {cid} slot {slot:%H:%M} lost: {ticks}")
        for slot in mine:
            for tick in found[(cid, slot)]:
                if tick.outcome == "skipped":
                    books.skipped += 1
                    if tick.id in unexplained:
                        books.problems.append(f"skipped with no tick running: {tick}")
                extra = max(tick.succeeded - 1, 0) + max(tick.runs - 1, 0)
                if slot not in allowed:
                    extra += 1
                    books.problems.append(f"campaign {cid}: unexpected slot {slot.isoformat()}")
                books.duplicated += extra
    stray = {cid for (cid, _) in found} - set(cadences)
    if stray:
        books.duplicated += sum(len(v) for (c, _), v in found.items() if c in stray)
        books.problems.append(f"ticks for campaigns that must not tick: {sorted(stray)}")
    return books


def clock_at(clock: ScheduleClock, real: datetime) -> datetime:
    assert clock.real_start is not None and clock.virtual_start is not None
    return clock.virtual_start + (real - clock.real_start) * clock.speed


@dataclass
class MetricsBooks:
    fetched: dict[tuple[int, date], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def settle_metrics(
    url: str, zones: dict[int, str], clock: ScheduleClock, spawned: datetime, last: datetime
) -> MetricsBooks:
    """Each campaign's local days, from the day it was created to the clock's last day: one
    fetch each, never before the day ended; every day that ended before ``last`` fetched."""
    books = MetricsBooks()
    with session_factory(url)() as s:
        created = pairs(s, select(Campaign.id, Campaign.created_at_utc))
        rows = s.execute(
            select(
                AOLAction.id, AOLAction.payload_json, AOLAction.status, AOLAction.started_at_utc
            ).where(AOLAction.action_type == keys.FETCH_METRICS)
        ).all()
        claims = Counter(
            s.scalars(select(AOLExecutionLog.action_id).where(AOLExecutionLog.event == "CLAIMED"))
        )
    by_day: dict[tuple[int, date], Any] = {}
    for row in rows:
        cid, day = (
            int(row.payload_json["campaign_id"]),
            date.fromisoformat(row.payload_json["date"]),
        )
        if cid not in zones:
            books.problems.append(f"metrics for campaign {cid}, which must have none")
            continue
        by_day[(cid, day)] = row
        end = clock.to_real(day_bounds(day, zones[cid])[1])
        if claims[row.id] > 1:
            books.problems.append(f"{cid} {day}: claimed {claims[row.id]} times")
        if row.started_at_utc is not None and row.started_at_utc < end:
            books.problems.append(f"{cid} {day}: fetched before the local day ended")
        books.fetched[(cid, day)] = int(row.status == "SUCCESS")
    for cid, tz in zones.items():
        first = local_date(created[cid], tz)
        newest = local_date(clock_at(clock, last), tz)
        day = first
        while day <= newest:
            ended = clock.to_real(day_bounds(day, tz)[1]) <= last
            action = by_day.get((cid, day))
            if action is None:
                books.problems.append(f"{cid} {day}: no metrics action")
            elif ended and action.status != "SUCCESS":
                books.problems.append(f"{cid} {day}: ended but {action.status}")
            day += timedelta(days=1)
        extra = [d for (c, d) in by_day if c == cid and (d < first or d > newest)]
        if extra:
            books.problems.append(f"{cid}: metrics for days outside its life {extra}")
    return books


def make_campaigns(url: str, plan: list[tuple[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """``plan``: (how many, spec overrides). Returns campaign id -> overrides."""
    made: dict[int, dict[str, Any]] = {}
    for count, overrides in plan:
        for _ in range(count):
            made[support.create(url, n_leads=0, **overrides)] = overrides
    return made


def wait_ticks_done(book: Book, timeout: float = 60) -> list[int]:
    ids = [tick.id for tick in tick_rows(book.url)]
    book.wait_all(ids, {"SUCCESS", "FAILED", "DLQ"}, timeout=timeout)
    return ids


# -- the test -------------------------------------------------------------------------------

PLAN: list[tuple[int, dict[str, Any]]] = [
    (2, {"timezone": "Asia/Dhaka", "tick_every_minutes": 1}),
    (2, {"timezone": "Asia/Kathmandu", "tick_every_minutes": 1}),
    (1, {"timezone": "Asia/Yangon", "tick_every_minutes": 1}),
    (1, {"timezone": "Europe/Berlin", "tick_every_minutes": 1}),
    (1, {"timezone": "America/New_York", "tick_every_minutes": 1}),
    (1, {"timezone": "Australia/Sydney", "tick_every_minutes": 1}),
    (3, {"timezone": "Europe/Berlin", "tick_every_minutes": 5}),
    # 00:05 in Dhaka is 18:05 UTC: nine clock minutes after the start.
    (2, {"timezone": "Asia/Dhaka", "tick_every_minutes": None, "tick_daily_at": "00:05"}),
]


def test_two_beats_and_a_restart_tick_each_slot_once_and_fetch_each_day_once(
    database_url: str, book: Book, rig: Rig
) -> None:
    made = make_campaigns(database_url, PLAN)
    paused, killed = (
        support.create(database_url, n_leads=0, timezone="Asia/Kathmandu") for _ in range(2)
    )
    draft = support.create(database_url, n_leads=0, activate=False, timezone="Asia/Dhaka")
    with session_factory(database_url)() as s, s.begin():
        campaigns.pause(s, paused)
        campaigns.set_kill_switch(s, killed, True)
    cadences = {
        cid: Cadence(o["timezone"], o.get("tick_every_minutes"), o.get("tick_daily_at"))
        for cid, o in made.items()
    }
    zones = {cid: o["timezone"] for cid, o in made.items()} | {
        paused: "Asia/Kathmandu",
        killed: "Asia/Kathmandu",
    }
    start_together([rig.worker(), rig.worker()])

    spawned = utcnow()
    first_pair = start_together([rig.beat(), rig.beat()])
    first = utcnow() + timedelta(seconds=MARGIN)
    time.sleep(8)
    # Mid-way: one beat dies hard, the other stops; for a moment no beat runs. Both come
    # back on their own schedule files, as a restarted beat does.
    first_pair[0].kill()
    first_pair[1].stop()
    gap_started = utcnow()
    start_together([rig.beat(schedule_file(p)) for p in first_pair])
    gap = (utcnow() - gap_started).total_seconds()
    time.sleep(max(0.0, 24 - (utcnow() - spawned).total_seconds()))
    last = utcnow() - timedelta(seconds=MARGIN)
    for process in rig.processes[-2:]:
        process.stop()
    stopped = utcnow()
    wait_ticks_done(book)

    ticks = settle_ticks(database_url, cadences, rig.clock, first, last, spawned, stopped)
    metrics = settle_metrics(database_url, zones, rig.clock, spawned, last)
    per_cadence = Counter((c.tick_every_minutes or c.tick_daily_at) for c in cadences.values())
    slot_sets = defaultdict(set)
    for cid, cadence in cadences.items():
        slot_sets[cadence.tick_every_minutes or cadence.tick_daily_at].add(tuple(ticks.slots[cid]))
    ended = sum(metrics.fetched.values())
    per_campaign = {k: len(next(iter(v))) for k, v in slot_sets.items()}
    print(
        f"\nclock {clock_at(rig.clock, spawned):%H:%M}-{clock_at(rig.clock, stopped):%H:%M} "
        f"UTC; no beat for {gap:.1f} s; campaigns per cadence {dict(per_cadence)}; "
        f"slots per campaign {per_campaign}; "
        f"ticks expected {ticks.expected}, lost {ticks.lost}, duplicated {ticks.duplicated}, "
        f"skipped {ticks.skipped}; metrics actions {len(metrics.fetched)}, fetched {ended}"
    )
    assert ticks.problems == [] and metrics.problems == []
    assert (ticks.lost, ticks.duplicated) == (0, 0)
    # Every campaign of one cadence saw the same slots: each fan-out run is one transaction.
    assert all(len(sets) == 1 for sets in slot_sets.values()), slot_sets
    # Every one-minute campaign ticked through the whole run, restart and gap included.
    assert len(ticks.slots[next(c for c in cadences if cadences[c].tick_every_minutes == 1)]) >= 20
    # The daily slot: yesterday's (caught up at the first run) and today's, at 00:05 Dhaka.
    daily = next(c for c in cadences if cadences[c].tick_daily_at)
    virtual_day = clock_at(rig.clock, spawned).date()
    assert [s.time() for s in ticks.slots[daily]] == [datetime(2000, 1, 1, 18, 5).time()] * 2
    assert ticks.slots[daily][1].date() == virtual_day
    # Dhaka's and Kathmandu's days ended during the run: fetched once each, after the end.
    for cid, tz in zones.items():
        if tz in ("Asia/Dhaka", "Asia/Kathmandu"):
            assert metrics.fetched[(cid, local_date(clock_at(rig.clock, spawned), tz))] == 1
    assert not any(c in (draft,) for c, _ in metrics.fetched)
    assert {cid for cid, _ in metrics.fetched} == set(zones)
