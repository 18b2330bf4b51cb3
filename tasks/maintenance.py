"""Housekeeping tasks run by beat."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)


def register_maintenance_tasks(app: Celery) -> None:
    @app.task(name="aol.sweep", ignore_result=True, acks_late=False)
    def sweep() -> dict[str, Any]:
        """Promote due actions, re-send lost messages, expire stale leases."""
        # Imported on first run, in the pool child that runs it (see tasks.actions.load_engine).
        from aicmo.orchestration.stats import SWEEP_HEARTBEAT, record_heartbeat
        from aicmo.orchestration.sweeper import Sweeper

        report = Sweeper().sweep().as_dict()
        try:
            # What `aicmo health` reads as "beat last run": a sweep that actually ran.
            record_heartbeat(SWEEP_HEARTBEAT, report)
        except Exception as exc:  # a heartbeat must never fail the sweep
            log.warning("could not record the sweep heartbeat: %s", exc)
        return report
