"""What beat calls: ticks for due campaigns and daily metrics, keyed so each slot runs once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

import aicmo.db
from aicmo.cam import campaigns, keys
from aicmo.cam.clock import day_bounds, local_date
from aicmo.cam.models import Campaign
from aicmo.cam.schedule import (
    ScheduleClock,
    enqueue_ticks,
    schedule_daily_metrics,
    schedule_ticks,
)
from aicmo.db import get_engine, session_factory, utcnow
from tests.support import campaigns as support
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

NOW = datetime(2026, 3, 28, 23, 50, 12, tzinfo=UTC)  # 00:50 on the 29th in Paris


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[RecordingDispatcher]:
    with support.recording_dispatcher() as recorder:
        yield recorder


def set_times(url: str, campaign_id: int, **values: datetime) -> None:
    with session_factory(url)() as s, s.begin():
        s.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))


class StatementCounter:
    def __init__(self, url: str) -> None:
        self.engine = get_engine(url)
        self.statements: list[str] = []

    def _count(self, *args: Any) -> None:
        statement = str(args[2])
        # db_clock's offset refresh (at most every CLOCK_REFRESH_SECONDS) is the clock, not
        # the fan-out: a slow machine crosses a refresh between two runs (seen in CI).
        if "clock_timestamp()" not in statement:
            self.statements.append(statement.split()[0].upper())

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def test_schedule_ticks_enqueues_each_active_campaigns_latest_slot_once(
    database_url: str, no_broker: RecordingDispatcher
) -> None:
    every = support.create(database_url, n_leads=0, tick_every_minutes=15)
    daily = support.create(database_url, n_leads=0, tick_every_minutes=None, tick_daily_at="09:30")
    support.create(database_url, n_leads=0, activate=False)  # DRAFT: never ticks
    killed = support.create(database_url, n_leads=0)
    paused = support.create(database_url, n_leads=0)
    with session_factory(database_url)() as s, s.begin():
        campaigns.set_kill_switch(s, killed, True)
        campaigns.pause(s, paused)

    with session_factory(database_url)() as s, s.begin():
        first = schedule_ticks(s, NOW)
    assert sorted(e.idempotency_key for e in first) == sorted(
        [
            f"cam_tick:{every}:2026-03-28T23:45:00+00:00",
            f"cam_tick:{daily}:2026-03-28T08:30:00+00:00",  # 09:30 Paris (UTC+1) on the 28th
        ]
    )
    assert all(e.created and e.action_type == keys.TICK for e in first)
    (row,) = support.actions(database_url, keys.TICK, f"cam_tick:{every}:")
    assert row.payload_json == {"campaign_id": every, "slot": "2026-03-28T23:45:00Z"}
    # A second beat (or the same one a minute later) in the same slot: nothing new.
    with session_factory(database_url)() as s, s.begin():
        again = schedule_ticks(s, NOW.replace(second=59))
    assert [e.action_id for e in again] == [e.action_id for e in first]
    assert not any(e.created for e in again)
    assert sorted(no_broker.ids) == sorted(e.action_id for e in first)
    # Downtime: hours later, only the latest slot runs.
    with session_factory(database_url)() as s, s.begin():
        later = schedule_ticks(s, datetime(2026, 3, 29, 9, 40, tzinfo=UTC))
    assert sorted(e.idempotency_key for e in later) == sorted(
        [
            f"cam_tick:{every}:2026-03-29T09:30:00+00:00",
            f"cam_tick:{daily}:2026-03-29T07:30:00+00:00",  # 09:30 Paris, now summer time
        ]
    )


def test_catch_up_none_skips_the_missed_slots_and_resumes_on_time(database_url: str) -> None:
    every = support.create(database_url, n_leads=0, tick_every_minutes=15)
    daily = support.create(database_url, n_leads=0, tick_every_minutes=None, tick_daily_at="09:30")
    back = datetime(2026, 3, 29, 9, 40, tzinfo=UTC)  # after hours of downtime
    with session_factory(database_url)() as s, s.begin():
        assert schedule_ticks(s, back, catch_up="none") == []
        resumed = schedule_ticks(s, back + timedelta(minutes=5, seconds=30), catch_up="none")
    assert [e.idempotency_key for e in resumed] == [f"cam_tick:{every}:2026-03-29T09:45:00+00:00"]
    with session_factory(database_url)() as s, s.begin():
        # 09:30 Paris is 07:30 UTC: seen two minutes late, it is on time.
        on_time = schedule_ticks(s, datetime(2026, 3, 30, 7, 32, tzinfo=UTC), catch_up="none")
    assert f"cam_tick:{daily}:2026-03-30T07:30:00+00:00" in {e.idempotency_key for e in on_time}


def test_a_quiet_minute_enqueues_nothing_and_a_new_campaign_ticks_at_once(
    database_url: str,
) -> None:
    old = support.create(database_url, n_leads=0, tick_every_minutes=60)
    set_times(database_url, old, updated_at_utc=NOW - timedelta(days=3))
    with session_factory(database_url)() as s, s.begin():
        assert [e.idempotency_key for e in schedule_ticks(s, NOW)] == [
            f"cam_tick:{old}:2026-03-28T23:00:00+00:00"  # the first run ever: the latest slot
        ]
    with (
        StatementCounter(database_url) as counter,
        session_factory(database_url)() as s,
        s.begin(),
    ):
        assert schedule_ticks(s, NOW + timedelta(minutes=1)) == []
    # Nothing due: the mark, the campaigns, the mark moved; no enqueue at all.
    assert counter.statements == ["SELECT", "SELECT", "INSERT"]
    new = support.create(database_url, n_leads=0, tick_every_minutes=60)
    set_times(database_url, new, updated_at_utc=NOW + timedelta(minutes=1, seconds=30))
    with session_factory(database_url)() as s, s.begin():
        assert schedule_ticks(s, NOW + timedelta(minutes=2), catch_up="none") == []
        made = schedule_ticks(s, NOW + timedelta(minutes=3))
    assert [e.idempotency_key for e in made] == [f"cam_tick:{new}:2026-03-28T23:00:00+00:00"]


def test_enqueue_ticks_for_a_list_of_campaigns_and_one_slot(database_url: str) -> None:
    a = support.create(database_url, n_leads=0)
    b = support.create(database_url, n_leads=0)
    with session_factory(database_url)() as s, s.begin():
        made = enqueue_ticks(s, [a, b, a], NOW)
        same = enqueue_ticks(s, [b], NOW)
    assert [e.idempotency_key for e in made] == [
        f"cam_tick:{a}:2026-03-28T23:50:12+00:00",
        f"cam_tick:{b}:2026-03-28T23:50:12+00:00",
    ]
    assert same[0].action_id == made[1].action_id and not same[0].created


def test_the_fan_out_costs_the_same_statements_for_3_or_300_campaigns(database_url: str) -> None:
    """One query for the campaigns and one bulk enqueue, not a query per campaign."""

    def run(fan_out: Any, now: datetime) -> list[str]:
        with (
            StatementCounter(database_url) as counter,
            session_factory(database_url)() as s,
            s.begin(),
        ):
            fan_out(s, now)
        return counter.statements

    ids = [support.create(database_url, n_leads=0, tick_every_minutes=5) for _ in range(3)]
    small = run(schedule_ticks, NOW), run(schedule_ticks, NOW)  # new rows, then no-ops
    small_metrics = run(schedule_daily_metrics, utcnow()), run(schedule_daily_metrics, utcnow())
    with session_factory(database_url)() as s, s.begin():
        base = s.get(Campaign, ids[0])
        assert base is not None
        s.add_all(
            Campaign(
                **{c.key: getattr(base, c.key) for c in Campaign.__table__.columns if c.key != "id"}
            )
            for _ in range(297)
        )
    aicmo.db._clock_offsets.clear()  # as a slow machine does: the clock is read again
    later = NOW + timedelta(minutes=5)
    large = run(schedule_ticks, later), run(schedule_ticks, later)
    run(schedule_daily_metrics, utcnow())
    large_metrics = run(schedule_daily_metrics, utcnow())
    assert small == large
    assert small_metrics[1] == large_metrics
    # The high-water mark, the campaigns; the ticks, the mark.
    assert small[0] == ["SELECT", "SELECT", "SAVEPOINT", "INSERT", "RELEASE", "INSERT"]
    assert len(support.actions(database_url, keys.TICK)) == 3 + 300


def test_two_beats_fanning_out_at_once_enqueue_each_slot_once(database_url: str) -> None:
    made = {
        minutes: [support.create(database_url, n_leads=0, tick_every_minutes=minutes)
                  for _ in range(60)]
        for minutes in (1, 5, 15)
    }  # fmt: skip
    for burst in range(3):  # four beats at the same instant, three times 70 s apart
        now = NOW + timedelta(seconds=70 * burst)

        def fan_out(now: datetime = now) -> list[str]:
            with session_factory(database_url)() as s, s.begin():
                return [e.idempotency_key for e in schedule_ticks(s, now)]

        threads = [support.Thread(fan_out) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join_result()
    ticks = support.actions(database_url, keys.TICK)
    slots = {
        1: ["23:50", "23:51", "23:52"],  # 23:50:12, 23:51:22, 23:52:32
        5: ["23:50"],
        15: ["23:45"],
    }
    assert sorted(t.idempotency_key for t in ticks) == sorted(
        f"cam_tick:{cid}:2026-03-28T{hh_mm}:00+00:00"
        for minutes, ids in made.items()
        for cid in ids
        for hh_mm in slots[minutes]
    )


def test_schedule_daily_metrics_waits_for_the_local_end_of_day(
    database_url: str, no_broker: RecordingDispatcher
) -> None:
    paris = support.create(database_url, n_leads=0)
    support.create(database_url, n_leads=0, activate=False)  # DRAFT: no metrics
    now = utcnow()
    set_times(database_url, paris, created_at_utc=now - timedelta(days=1))
    today = local_date(now, "Europe/Paris")
    yesterday = today - timedelta(days=1)
    with session_factory(database_url)() as s, s.begin():
        made = schedule_daily_metrics(s, now)
    by_key = {e.idempotency_key: e for e in made}
    assert set(by_key) == {keys.metrics_key(paris, yesterday), keys.metrics_key(paris, today)}
    # Yesterday's day has ended: due now. Today's waits in the database for its end.
    assert by_key[keys.metrics_key(paris, yesterday)].status == "READY"
    assert no_broker.ids == [by_key[keys.metrics_key(paris, yesterday)].action_id]
    assert by_key[keys.metrics_key(paris, today)].status == "PENDING"
    (pending,) = support.actions(database_url, keys.FETCH_METRICS, keys.metrics_key(paris, today))
    assert pending.not_before_utc == day_bounds(today, "Europe/Paris")[1]
    assert pending.payload_json == {"campaign_id": paris, "date": today.isoformat()}
    with session_factory(database_url)() as s, s.begin():
        assert not any(e.created for e in schedule_daily_metrics(s, now))


def test_days_missed_while_beat_was_down_are_fetched_once(database_url: str) -> None:
    """Lookback 2 days, bounded by when the campaign was created and when it stopped."""
    now = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)  # after Paris' spring-forward day
    old = support.create(database_url, n_leads=0)
    new = support.create(database_url, n_leads=0, timezone="Asia/Tokyo")
    paused = support.create(database_url, n_leads=0, timezone="America/New_York")
    stopped = support.create(database_url, n_leads=0)
    long_stopped = support.create(database_url, n_leads=0)
    with session_factory(database_url)() as s, s.begin():
        campaigns.pause(s, paused)
        campaigns.stop(s, stopped)
        campaigns.stop(s, long_stopped)
    set_times(database_url, old, created_at_utc=now - timedelta(days=30))
    set_times(database_url, new, created_at_utc=now - timedelta(hours=1))
    set_times(database_url, paused, created_at_utc=now - timedelta(days=30))
    stop_time = now - timedelta(days=1)
    set_times(
        database_url, stopped, created_at_utc=now - timedelta(days=30), updated_at_utc=stop_time
    )
    set_times(
        database_url,
        long_stopped,
        created_at_utc=now - timedelta(days=30),
        updated_at_utc=now - timedelta(days=10),
    )

    def days(made: list[Any]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for e in made:
            _, cid, day = e.idempotency_key.split(":")
            found.setdefault(int(cid), []).append(day)
        return found

    with session_factory(database_url)() as s, s.begin():
        made = schedule_daily_metrics(s, now)
    assert days(made) == {
        old: ["2026-03-28", "2026-03-29", "2026-03-30"],
        new: ["2026-03-30"],  # created today (Tokyo): no days before it existed
        paused: ["2026-03-28", "2026-03-29", "2026-03-30"],
        stopped: ["2026-03-28", "2026-03-29"],  # up to the day it stopped
    }
    # Beat was down for two more days: the days it missed are fetched once, none twice.
    with session_factory(database_url)() as s, s.begin():
        later = schedule_daily_metrics(s, now + timedelta(days=2))
    created = [e.idempotency_key for e in later if e.created]
    assert sorted(created) == sorted(
        [f"cam_metrics:{c}:{d}" for c in (old, paused) for d in ("2026-03-31", "2026-04-01")]
        + [f"cam_metrics:{new}:{d}" for d in ("2026-03-31", "2026-04-01")]
    )
    ours = {e.idempotency_key for e in later if not e.created}
    assert f"cam_metrics:{old}:2026-03-30" in ours


def test_metrics_not_before_follows_an_accelerated_clock(database_url: str) -> None:
    """The test clock maps a virtual end of day back to the real instant it happens at."""
    cid = support.create(database_url, n_leads=0, timezone="UTC")
    real = utcnow()
    virtual = datetime.combine(local_date(real, "UTC") + timedelta(days=1), datetime.min.time())
    virtual = virtual.replace(tzinfo=UTC) - timedelta(minutes=5)  # 23:55 tomorrow
    clock = ScheduleClock(real_start=real, virtual_start=virtual, speed=60)
    with session_factory(database_url)() as s, s.begin():
        made = schedule_daily_metrics(s, clock.now(), clock=clock)
    day: date = virtual.date()
    (today,) = [e for e in made if e.idempotency_key == keys.metrics_key(cid, day)]
    assert today.status == "READY"  # its virtual end is 5 real seconds away: within the horizon
    (row,) = support.actions(database_url, keys.FETCH_METRICS, keys.metrics_key(cid, day))
    assert abs(row.not_before_utc - (real + timedelta(seconds=5))) < timedelta(seconds=1)
