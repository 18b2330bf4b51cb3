"""Beat's static entries and the settings behind them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from celery.schedules import crontab
from pydantic import ValidationError

import beat_schedule
from aicmo.cam.schedule import ScheduleClock
from aicmo.config import Settings


def test_the_entries_are_few_static_fan_outs_that_expire() -> None:
    entries = beat_schedule.build_schedule(Settings())
    assert set(entries) == {
        "aol.sweep",
        "cam.schedule_ticks",
        "cam.schedule_daily_metrics",
        "aol.purge",
    }
    assert {e["task"] for e in entries.values()} == set(entries)
    assert entries["aol.sweep"]["schedule"] == Settings().sweep_interval_seconds
    assert entries["cam.schedule_ticks"]["schedule"] == 60.0
    assert entries["cam.schedule_daily_metrics"]["schedule"] == 900.0
    # A late fan-out still covers the tolerance (300 s) from its own "now": worth running
    # until tolerance - interval.
    # Beat's tasks have a queue of their own by default: a backlog of actions never delays them.
    assert entries["cam.schedule_ticks"]["options"] == {"expires": 240.0, "queue": "aol.beat"}
    assert entries["cam.schedule_daily_metrics"]["options"] == {
        "expires": 900.0,
        "queue": "aol.beat",
    }
    assert entries["aol.sweep"]["options"]["queue"] == "aol.beat"
    purge = entries["aol.purge"]
    assert purge["schedule"] == crontab(hour=3, minute=17)
    assert purge["options"] == {"expires": 3600, "queue": "aol.beat"}


def test_a_worker_started_without_q_consumes_the_beat_queue() -> None:
    from tasks.config import celery_config

    queues = {q.name for q in celery_config(Settings())["task_queues"]}
    assert {"aol", "aol.beat"} <= queues


def test_intervals_queue_and_purge_time_come_from_the_settings() -> None:
    entries = beat_schedule.build_schedule(
        Settings(
            beat_ticks_interval_seconds=10,
            beat_metrics_interval_seconds=3600,
            beat_catch_up_tolerance_seconds=120,
            beat_queue="beat",
            purge_at_utc="23:05",
        )
    )
    assert entries["cam.schedule_ticks"]["schedule"] == 10
    assert entries["cam.schedule_ticks"]["options"] == {"expires": 110, "queue": "beat"}
    assert entries["cam.schedule_daily_metrics"]["options"]["queue"] == "beat"
    assert entries["aol.sweep"]["options"]["queue"] == "beat"
    assert entries["aol.purge"]["schedule"] == crontab(hour=23, minute=5)


def test_settings_refuse_a_tolerance_that_would_skip_slots_and_a_short_retention() -> None:
    with pytest.raises(ValidationError, match="at least twice"):
        Settings(beat_ticks_interval_seconds=60, beat_catch_up_tolerance_seconds=100)
    with pytest.raises(ValidationError, match="retention_days"):
        Settings(retention_days=3)
    with pytest.raises(ValidationError, match="beat_catch_up"):
        Settings(beat_catch_up="all")
    with pytest.raises(ValidationError, match="purge_at_utc"):
        Settings(purge_at_utc="25:00")
    with pytest.raises(ValidationError, match="both"):
        Settings(beat_test_clock_real_start=datetime(2030, 1, 1, tzinfo=UTC))


def test_the_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICMO_BEAT_CATCH_UP", "none")
    monkeypatch.setenv("AICMO_RETENTION_DAYS", "45")
    monkeypatch.setenv("AICMO_BEAT_TEST_CLOCK_REAL_START", "2030-01-01T00:00:00+00:00")
    monkeypatch.setenv("AICMO_BEAT_TEST_CLOCK_VIRTUAL_START", "2030-06-01T12:00:00+00:00")
    monkeypatch.setenv("AICMO_BEAT_TEST_CLOCK_SPEED", "60")
    # At 60 clock seconds a second, the default minute between runs would be a clock hour.
    with pytest.raises(ValidationError, match="at least twice"):
        Settings()
    monkeypatch.setenv("AICMO_BEAT_TICKS_INTERVAL_SECONDS", "0.5")
    monkeypatch.setenv("AICMO_BEAT_CATCH_UP_TOLERANCE_SECONDS", "600")
    found = Settings()
    assert (found.beat_catch_up, found.retention_days) == ("none", 45)
    clock = ScheduleClock.from_settings(found)
    assert clock.accelerated and clock.speed == 60
    assert clock.to_real(datetime(2030, 6, 1, 13, tzinfo=UTC)) == datetime(
        2030, 1, 1, 0, 1, tzinfo=UTC
    )
    # An accelerated clock makes the tolerance (clock seconds) shorter in real time.
    entries = beat_schedule.build_schedule(found)
    assert entries["cam.schedule_ticks"]["options"]["expires"] == pytest.approx(9.5)
    # A speed alone (no start instants) leaves the real clock.
    monkeypatch.delenv("AICMO_BEAT_TEST_CLOCK_REAL_START")
    monkeypatch.delenv("AICMO_BEAT_TEST_CLOCK_VIRTUAL_START")
    monkeypatch.setenv("AICMO_BEAT_CATCH_UP_TOLERANCE_SECONDS", "300")
    assert not ScheduleClock.from_settings(Settings()).accelerated
