"""Cadence slots, catch-up after downtime, local days and action keys, with fixed clocks."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from aicmo.cam import keys
from aicmo.cam.clock import day_bounds, local_date, zone
from aicmo.cam.models import Campaign
from aicmo.cam.schedule import (
    Cadence,
    CatchUp,
    ScheduleClock,
    due_slots,
    latest_slot,
    slots_between,
    tick_payload,
)
from aicmo.orchestration.errors import InvalidSchedule

TOLERANCE = timedelta(seconds=300)


def campaign(**fields: object) -> Campaign:
    return Campaign(timezone=fields.pop("timezone", "Europe/Paris"), **fields)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fan_out(
    cadence: Cadence,
    runs: list[datetime],
    catch_up: CatchUp = "latest",
    tolerance: timedelta = TOLERANCE,
) -> dict[datetime, datetime]:
    """Run the fan-out at each instant, in order, each run seeing the high-water mark the runs
    before it left: the slot -> the first run that enqueued it (a set of keys, as the unique
    idempotency key makes it)."""
    first: dict[datetime, datetime] = {}
    mark: datetime | None = None
    for now in sorted(runs):
        for slot in due_slots(cadence, now, catch_up, tolerance, mark):
            first.setdefault(slot, now)
        mark = now if mark is None else max(mark, now)
    return first


def every_minute(start: datetime, end: datetime, offset_seconds: float = 0) -> list[datetime]:
    runs, now = [], start + timedelta(seconds=offset_seconds)
    while now <= end:
        runs.append(now)
        now += timedelta(minutes=1)
    return runs


# -- intervals ----------------------------------------------------------------------------


def test_interval_slots_are_aligned() -> None:
    every15 = campaign(tick_every_minutes=15)
    now = utc(2026, 5, 4, 10, 44, 59)
    assert latest_slot(every15, now) == utc(2026, 5, 4, 10, 30)
    assert latest_slot(every15, now + timedelta(seconds=1)) == utc(2026, 5, 4, 10, 45)
    # Any zone in, UTC out.
    paris = now.astimezone(zone("Europe/Paris"))
    assert latest_slot(every15, paris) == utc(2026, 5, 4, 10, 30)
    assert slots_between(every15, utc(2026, 5, 4, 10, 30), utc(2026, 5, 4, 11, 30)) == [
        utc(2026, 5, 4, 10, 45),
        utc(2026, 5, 4, 11, 0),
        utc(2026, 5, 4, 11, 15),
        utc(2026, 5, 4, 11, 30),
    ]
    assert slots_between(every15, utc(2026, 5, 4, 10, 31), utc(2026, 5, 4, 10, 44)) == []
    # Daily-length and week-length intervals are elapsed time from the epoch too.
    assert latest_slot(Cadence("UTC", 1440), utc(2026, 5, 4, 10)) == utc(2026, 5, 4)
    assert latest_slot(Cadence("UTC", 7 * 1440), utc(2026, 5, 4, 10)) == utc(2026, 4, 30)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("Australia/Sydney", date(2026, 4, 5), 25),
        ("Australia/Sydney", date(2026, 10, 4), 23),
    ],
)
def test_an_hourly_cadence_is_elapsed_time_so_a_dst_day_has_23_or_25_ticks(
    tz: str, day: date, hours: int
) -> None:
    hourly = Cadence(tz, tick_every_minutes=60)
    start, end = day_bounds(day, tz)
    ticks = fan_out(hourly, every_minute(start - timedelta(hours=2), end + timedelta(hours=2)))
    on_the_day = sorted(s for s in ticks if start <= s < end)
    assert len(on_the_day) == hours
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(on_the_day))


# -- daily local times across DST ---------------------------------------------------------


# (zone, DST day, HH:MM, the slot that day in UTC, the slots the day before and after)
DST_DAYS = [
    # New York springs forward at 02:00 -> 03:00: 02:30 is in the gap, runs at 03:30 EDT.
    ("America/New_York", date(2026, 3, 8), "02:30", utc(2026, 3, 8, 7, 30),
     utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)),
    # ... and falls back at 02:00 -> 01:00: 01:30 happens twice, runs at the first (EDT).
    ("America/New_York", date(2026, 11, 1), "01:30", utc(2026, 11, 1, 5, 30),
     utc(2026, 10, 31, 5, 30), utc(2026, 11, 2, 6, 30)),
    # Berlin: 02:00 -> 03:00 in March (gap), 03:00 -> 02:00 in October (repeat).
    ("Europe/Berlin", date(2026, 3, 29), "02:30", utc(2026, 3, 29, 1, 30),
     utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)),
    ("Europe/Berlin", date(2026, 10, 25), "02:30", utc(2026, 10, 25, 0, 30),
     utc(2026, 10, 24, 0, 30), utc(2026, 10, 26, 1, 30)),
    # Sydney, southern hemisphere: falls back in April (repeat), springs forward in October.
    ("Australia/Sydney", date(2026, 4, 5), "02:30", utc(2026, 4, 4, 15, 30),
     utc(2026, 4, 3, 15, 30), utc(2026, 4, 5, 16, 30)),
    ("Australia/Sydney", date(2026, 10, 4), "02:30", utc(2026, 10, 3, 16, 30),
     utc(2026, 10, 2, 16, 30), utc(2026, 10, 4, 15, 30)),
]  # fmt: skip


@pytest.mark.parametrize("catch_up", ["latest", "none"])
@pytest.mark.parametrize(("tz", "day", "at", "slot", "before", "after"), DST_DAYS)
def test_a_daily_slot_runs_exactly_once_on_a_dst_day(
    tz: str,
    day: date,
    at: str,
    slot: datetime,
    before: datetime,
    after: datetime,
    catch_up: CatchUp,
) -> None:
    daily = Cadence(tz, tick_daily_at=at)
    start = day_bounds(day - timedelta(days=1), tz)[0]
    end = day_bounds(day + timedelta(days=1), tz)[1]
    # A fan-out every minute (17 s past it) for three local days, as beat would run it.
    ticks = fan_out(daily, every_minute(start, end, offset_seconds=17), catch_up)
    # (With "latest", the very first run also catches up the slot of the day before.)
    ticks = {s: run for s, run in ticks.items() if s >= start}
    assert sorted(ticks) == [before, slot, after]
    assert Counter(local_date(s, tz) for s in ticks) == {
        day - timedelta(days=1): 1,
        day: 1,
        day + timedelta(days=1): 1,
    }
    # Each was enqueued by the first run after its time, not an hour early or late.
    assert all(timedelta(0) <= ticks[s] - s < timedelta(minutes=1) for s in ticks)
    assert latest_slot(daily, slot + timedelta(hours=2)) == slot
    assert latest_slot(daily, slot - timedelta(seconds=1)) == before


def test_a_repeated_wall_time_is_not_a_second_slot() -> None:
    # New York, 2026-11-01: 01:30 EST (06:30 UTC) is the second 01:30 of the day.
    daily = Cadence("America/New_York", tick_daily_at="01:30")
    first, second = utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)
    minute = timedelta(minutes=1)
    assert due_slots(daily, first, "none", TOLERANCE, first - minute) == [first]
    # An hour later the wall clock shows 01:30 again: nothing new is due. ("latest" names
    # the first 01:30 again, as it always re-asserts the latest slot: the same key, a no-op.)
    assert due_slots(daily, second, "none", TOLERANCE, second - minute) == []
    assert due_slots(daily, second, "latest", TOLERANCE, second - minute) == [first]
    assert due_slots(daily, second, "latest", TOLERANCE) == [first]
    assert due_slots(daily, second, "none", TOLERANCE) == []
    assert latest_slot(daily, second) == first


def test_daily_slots_follow_the_campaigns_local_time() -> None:
    daily = campaign(tick_daily_at="09:30", timezone="America/New_York")
    before = utc(2026, 7, 1, 13, 0)  # 09:00 in New York (EDT)
    after = utc(2026, 7, 1, 13, 30)
    assert latest_slot(daily, before) == utc(2026, 6, 30, 13, 30)
    assert latest_slot(daily, after) == utc(2026, 7, 1, 13, 30)
    winter = utc(2026, 1, 15, 15, 0)  # EST: 09:30 is 14:30 UTC
    assert latest_slot(daily, winter) == utc(2026, 1, 15, 14, 30)


# -- late runs, two beats, downtime -------------------------------------------------------


def test_late_lost_and_doubled_fan_out_runs_skip_no_slot_and_double_none() -> None:
    """Two beats a minute apart each, every run 0-120 s late, one run in five lost: every
    one-minute slot is enqueued, once."""
    rng = random.Random(4)
    every1 = Cadence("UTC", tick_every_minutes=1)
    start, end = utc(2026, 5, 4, 10), utc(2026, 5, 4, 14)
    runs = [
        sent + timedelta(seconds=rng.uniform(0, 120))
        for beat in (0, 29.5)
        for sent in every_minute(start, end, beat)
        if rng.random() > 0.2
    ]
    assert max(b - a for a, b in pairwise(sorted(runs))) > timedelta(minutes=1)
    first = fan_out(every1, runs)
    low = latest_slot(every1, min(runs))
    expected = [low, *slots_between(every1, low, max(runs))]
    assert sorted(first) == expected
    # The same in "none" mode: a late run is not downtime.
    assert sorted(fan_out(every1, runs, "none")) == expected


def test_after_three_hours_down_only_the_latest_missed_slot_runs() -> None:
    last_run = utc(2026, 5, 4, 6, 0, 20)
    back = last_run + timedelta(hours=3, minutes=7)  # 09:07:20
    every15 = Cadence("Europe/Berlin", tick_every_minutes=15)
    daily = Cadence("Europe/Berlin", tick_daily_at="09:30")  # 07:30 UTC, while beat was down
    every1 = Cadence("UTC", tick_every_minutes=1)
    # The slots it missed: 12 of the 15-minute cadence, 187 of the one-minute one, one daily.
    assert len(slots_between(every15, last_run, back)) == 12
    assert len(slots_between(every1, last_run, back)) == 187
    assert due_slots(every15, back, "latest", TOLERANCE, last_run) == [utc(2026, 5, 4, 9, 0)]
    assert due_slots(daily, back, "latest", TOLERANCE, last_run) == [utc(2026, 5, 4, 7, 30)]
    assert due_slots(every1, back, "latest", TOLERANCE, last_run) == [utc(2026, 5, 4, 9, 7)]
    # "none": they are skipped (the one-minute slot of 09:07 is on time), and the campaign
    # resumes at its next slot.
    assert due_slots(every15, back, "none", TOLERANCE, last_run) == []
    assert due_slots(daily, back, "none", TOLERANCE, last_run) == []
    assert due_slots(every1, back, "none", TOLERANCE, last_run) == [utc(2026, 5, 4, 9, 7)]
    resumed = back + timedelta(minutes=8)  # 09:15:20, the next run after 09:07:20
    assert due_slots(every15, resumed, "none", TOLERANCE, back) == [utc(2026, 5, 4, 9, 15)]
    # No run ever (a fresh install) is downtime too.
    assert due_slots(every15, back, "latest", TOLERANCE) == [utc(2026, 5, 4, 9, 0)]


def test_the_whole_downtime_as_beat_sees_it() -> None:
    """Minute runs, three hours of none, minute runs again: with "latest" the gap costs one
    tick (the latest slot, at restart); with "none" it costs none."""
    every15 = Cadence("America/New_York", tick_every_minutes=15)
    before = every_minute(utc(2026, 3, 8, 5), utc(2026, 3, 8, 6), 20)
    after = every_minute(utc(2026, 3, 8, 9, 7), utc(2026, 3, 8, 10), 20)
    latest = fan_out(every15, before + after, "latest")
    none = fan_out(every15, before + after, "none")
    gap = [s for s in latest if utc(2026, 3, 8, 6, 1) <= s < utc(2026, 3, 8, 9, 15)]
    assert gap == [utc(2026, 3, 8, 9, 0)] and latest[gap[0]] == utc(2026, 3, 8, 9, 7, 20)
    assert set(latest) - set(none) == {utc(2026, 3, 8, 9, 0)}
    # A short stop (two minutes, under the tolerance) is no downtime: nothing is skipped.
    every1 = Cadence("UTC", tick_every_minutes=1)
    short = every_minute(utc(2026, 3, 8, 5), utc(2026, 3, 8, 5, 10), 20) + every_minute(
        utc(2026, 3, 8, 5, 13), utc(2026, 3, 8, 5, 20), 20
    )
    modes: list[CatchUp] = ["latest", "none"]
    for mode in modes:
        ticks = sorted(fan_out(every1, short, mode))
        assert ticks == [utc(2026, 3, 8, 5, m) for m in range(0, 20)]


def test_a_campaign_that_becomes_active_ticks_at_once_only_with_latest() -> None:
    hourly = Cadence("UTC", tick_every_minutes=60)
    now, mark = utc(2026, 5, 4, 10, 20), utc(2026, 5, 4, 10, 19)
    assert due_slots(hourly, now, "latest", TOLERANCE, mark) == [utc(2026, 5, 4, 10)]
    assert due_slots(hourly, now, "none", TOLERANCE, mark) == []


def test_a_mark_ahead_of_now_means_done_unless_far_ahead() -> None:
    every1 = Cadence("UTC", tick_every_minutes=1)
    now = utc(2026, 5, 4, 10, 0, 30)
    # Another beat's run, a little later, committed first: its slots are done.
    assert due_slots(every1, now, "none", TOLERANCE, now + timedelta(seconds=40)) == []
    # An hour ahead: a host's clock runs ahead; as if unknown (the latest slot, on time).
    assert due_slots(every1, now, "none", TOLERANCE, now + timedelta(hours=1)) == [
        utc(2026, 5, 4, 10)
    ]


def test_due_slots_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="latest"):
        due_slots(Cadence("UTC", 5), utc(2026, 1, 1), "all", TOLERANCE)  # type: ignore[arg-type]


# -- the accelerated test clock -----------------------------------------------------------


def test_the_schedule_clock_is_real_time_unless_a_test_accelerates_it() -> None:
    real = ScheduleClock()
    assert not real.accelerated
    assert abs(real.now() - datetime.now(UTC)) < timedelta(seconds=1)
    assert real.to_real(utc(2030, 1, 1)) == utc(2030, 1, 1)
    now = datetime.now(UTC)
    fast = ScheduleClock(real_start=now, virtual_start=utc(2030, 1, 1), speed=60)
    assert fast.accelerated
    assert abs(fast.now() - utc(2030, 1, 1)) < timedelta(seconds=60)
    # One virtual hour from the start is one real minute from it.
    assert fast.to_real(utc(2030, 1, 1, 1)) == now + timedelta(minutes=1)


# -- keys and local days ------------------------------------------------------------------


def test_keys_have_the_documented_formats() -> None:
    slot = datetime(2026, 5, 4, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    assert keys.tick_key(7, slot) == "cam_tick:7:2026-05-04T10:30:00+00:00"
    assert keys.publish_key(42) == "cam_publish:42"
    assert keys.publish_key(42, after=9) == "cam_publish:42:9"  # queued again after action 9
    assert keys.metrics_key(7, date(2026, 5, 4)) == "cam_metrics:7:2026-05-04"
    assert keys.leads_key("typeform", "evt_1") == "cam_leads:typeform:evt_1"
    assert tick_payload(7, slot) == {"campaign_id": 7, "slot": "2026-05-04T10:30:00+00:00"}
    with pytest.raises(InvalidSchedule, match="naive"):
        keys.tick_key(7, datetime(2026, 5, 4, 12, 30))
    with pytest.raises(InvalidSchedule, match="naive"):
        latest_slot(Cadence("UTC", 5), datetime(2026, 5, 4, 12, 30))


def test_local_days_are_23_or_25_hours_long_on_dst_changes() -> None:
    spring = day_bounds(date(2026, 3, 29), "Europe/Paris")
    autumn = day_bounds(date(2026, 10, 25), "Europe/Paris")
    assert spring == (utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0))
    assert autumn[1] - autumn[0] == timedelta(hours=25)
    assert local_date(utc(2026, 3, 28, 23, 30), "Europe/Paris") == date(2026, 3, 29)
    with pytest.raises(ValueError, match="unknown IANA timezone"):
        zone("Nowhere/Land")
