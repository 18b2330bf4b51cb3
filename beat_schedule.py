"""Celery beat's schedule: a few static entries that fan out over the database.

Beat never holds one entry per campaign: each entry asks the database what is due, and every
action it leads to is keyed, so two beat processes (or a restarted one) are harmless.

- ``aol.sweep`` every ``AICMO_SWEEP_INTERVAL_SECONDS`` (5): promote due PENDING actions,
  re-send lost messages, expire stale leases.
- ``cam.schedule_ticks`` every ``AICMO_BEAT_TICKS_INTERVAL_SECONDS`` (60): each ACTIVE
  campaign's due cadence slots.
- ``cam.schedule_daily_metrics`` every ``AICMO_BEAT_METRICS_INTERVAL_SECONDS`` (900): each
  live campaign's end-of-day metrics (they wait PENDING for the local end of the day).
- ``aol.purge`` daily at ``AICMO_PURGE_AT_UTC`` (03:17 UTC): terminal actions older than
  ``AICMO_RETENTION_DAYS``. A crontab, not an interval: beat starts an interval's count
  afresh at each start, so an often restarted beat would never reach a daily one.

Each entry expires: a message that waited so long that a newer run makes it useless is dropped
by the worker instead of running late in a burst.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from aicmo.config import Settings, get_settings


def build_schedule(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    s = settings or get_settings()
    route: dict[str, Any] = {"queue": s.beat_queue}
    ticks = s.beat_ticks_interval_seconds
    # A late cam.schedule_ticks still enqueues every slot within the tolerance of its own
    # "now", so it is worth running until tolerance - interval: past that, a gap could open.
    # (The tolerance counts clock seconds, which a test's accelerated clock makes shorter.)
    speed = s.beat_test_clock_speed if s.beat_test_clock_real_start else 1.0
    ticks_expire = max(s.beat_catch_up_tolerance_seconds / speed - ticks, ticks)
    hour, minute = (int(part) for part in s.purge_at_utc.split(":"))
    return {
        "aol.sweep": {
            "task": "aol.sweep",
            "schedule": s.sweep_interval_seconds,
            # A sweep that waited in the queue longer than two intervals is stale: drop it.
            "options": {"expires": s.sweep_interval_seconds * 2, **route},
        },
        "cam.schedule_ticks": {
            "task": "cam.schedule_ticks",
            "schedule": ticks,
            "options": {"expires": ticks_expire, **route},
        },
        "cam.schedule_daily_metrics": {
            "task": "cam.schedule_daily_metrics",
            "schedule": s.beat_metrics_interval_seconds,
            "options": {"expires": s.beat_metrics_interval_seconds, **route},
        },
        "aol.purge": {
            "task": "aol.purge",
            "schedule": crontab(hour=hour, minute=minute),
            # Missed by more than an hour (beat or workers down): wait for the next day.
            "options": {"expires": 3600, **route},
        },
    }


SCHEDULE = build_schedule()
