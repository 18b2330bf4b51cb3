"""The fan-out tasks beat sends (see beat_schedule.py); the logic lives in aicmo.

``cam.schedule_ticks``: the due ticks of every ACTIVE campaign (aicmo.cam.schedule).
``cam.schedule_daily_metrics``: each live campaign's end-of-day metrics (aicmo.cam.schedule).
``aol.purge``: make the execution log's monthly partitions ahead (PostgreSQL), then delete
terminal actions older than the retention (aicmo.orchestration.partitions, .purge).

Like ``aol.sweep`` they are acked on receipt: a run lost with its worker is made up for by the
next one (every run enqueues what is due, keyed, so runs can repeat, overlap or be lost).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)


def _report(name: str, now: Any, enqueued: list[Any]) -> dict[str, Any]:
    created = sum(1 for e in enqueued if e.created)
    report = {"now": now.isoformat(), "due": len(enqueued), "created": created}
    if created:
        log.info("%s: %d new action(s) of %d due", name, created, len(enqueued), extra=report)
    return report


def register_beat_tasks(app: Celery) -> None:
    @app.task(name="cam.schedule_ticks", ignore_result=True, acks_late=False)
    def schedule_ticks() -> dict[str, Any]:
        """Enqueue CAMPAIGN_TICK for every due slot of every ACTIVE campaign."""
        # Imported on first run: a worker that never gets beat's fan-outs (every pool child
        # but one, most workers) never holds the campaign models.
        from aicmo.cam import schedule
        from aicmo.db import session_scope

        now = schedule.ScheduleClock.from_settings().now()
        with session_scope() as session:
            enqueued = schedule.schedule_ticks(session, now)
        return _report("cam.schedule_ticks", now, enqueued)

    @app.task(name="cam.schedule_daily_metrics", ignore_result=True, acks_late=False)
    def schedule_daily_metrics() -> dict[str, Any]:
        """Enqueue CAMPAIGN_FETCH_METRICS for each live campaign's local days."""
        from aicmo.cam import schedule
        from aicmo.db import session_scope

        clock = schedule.ScheduleClock.from_settings()
        now = clock.now()
        with session_scope() as session:
            enqueued = schedule.schedule_daily_metrics(session, now, clock=clock)
        return _report("cam.schedule_daily_metrics", now, enqueued)

    @app.task(name="aol.purge", ignore_result=True, acks_late=False)
    def purge() -> dict[str, Any]:
        """Make the execution log's months ahead (PostgreSQL), then delete terminal actions
        (and their logs) older than AICMO_RETENTION_DAYS, dropping wholly expired months."""
        from aicmo.orchestration.partitions import ensure_partitions
        from aicmo.orchestration.purge import purge_finished

        made: list[str] = []
        try:
            made = ensure_partitions()
        except Exception:  # the purge still runs; the next run makes them (months ahead)
            log.exception("could not make the execution log's partitions")
        return {**purge_finished().as_dict(), "partitions_made": made}
