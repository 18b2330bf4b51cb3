"""``GET /metrics``: Prometheus exposition.

Two sources, one page:

* gauges read from the table at scrape time (``aicmo.orchestration.stats``: actions by type
  and status, queue depth, DLQ size, oldest READY age, pauses, last sweep);
* counters and histograms of what happened: actions finished by type and outcome,
  queued-to-claimed latency, run duration, webhook requests by outcome.

Workers run in many processes on many hosts, so their process-local counters could not be
summed here. Instead this process **tails the execution log** (``aol_execution_logs``, the
record every worker writes anyway): at each scrape it reads the rows appended since the
last one (by primary key, at most ``TAIL_BATCH`` rows a scrape) and feeds them into its own
counters. The counters start at zero when the web process starts, as any Prometheus counter
does after a restart; ``rate()`` and ``increase()`` handle that. Scrape one web process
(``aicmo serve --workers 1``, or a dedicated instance) so that series are not interleaved.

Celery's own names (as celery-exporter publishes them) are kept for what Celery also
knows: ``celery_task_succeeded_total``, ``celery_task_failed_total``,
``celery_task_retried_total`` and the ``celery_task_runtime`` histogram, labelled by task
``name`` (``aol.<TYPE>``), so existing Celery dashboards keep working.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import func, select

from aicmo.db import session_scope
from aicmo.ops import stats as stats_ops
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.status import LogEvent

TAIL_BATCH = 20_000
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
OUTCOMES = {
    LogEvent.SUCCEEDED.value: "success",
    LogEvent.FAILED.value: "failed",
    LogEvent.DEAD_LETTERED.value: "dlq",
    LogEvent.RETRY_SCHEDULED.value: "retry",
    LogEvent.LEASE_EXPIRED.value: "lease_expired",
}
WEBHOOK_OUTCOMES = (
    "accepted",
    "duplicate",
    "bad_signature",
    "unknown_source",
    "too_large",
    "conflict",
    "invalid",
    "unavailable",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.finished = Counter(
            "aicmo_actions_finished",
            "Actions that finished a run, by type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "aicmo_action_queue_latency_seconds",
            "From an action being due to a worker claiming it.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "aicmo_action_run_duration_seconds",
            "How long a run took, by type.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.celery_succeeded = Counter(
            "celery_task_succeeded",
            "Tasks that succeeded (celery-exporter's name).",
            ["name"],
            registry=r,
        )
        self.celery_failed = Counter(
            "celery_task_failed",
            "Tasks that failed (celery-exporter's name).",
            ["name"],
            registry=r,
        )
        self.celery_retried = Counter(
            "celery_task_retried",
            "Tasks that were retried (celery-exporter's name).",
            ["name"],
            registry=r,
        )
        self.celery_runtime = Histogram(
            "celery_task_runtime",
            "Task runtime in seconds (celery-exporter's name).",
            ["name"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.webhooks = Counter(
            "aicmo_webhook_requests",
            "Lead webhook requests by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)
        # The outcome loop (aicmo.web.routes.outcomes), counted by the process that served it.
        self.unsubscribe_seconds = Histogram(
            "aicmo_unsubscribe_to_suppression_seconds",
            "From a one-click unsubscribe request to its suppression committed.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.unsubscribes = Counter(
            "aicmo_unsubscribe_requests",
            "Unsubscribe POSTs: new, again (already unsubscribed), refused (bad token).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("new", "again", "refused"):
            self.unsubscribes.labels(outcome)
        self.email_events = Counter(
            "aicmo_email_event_requests",
            "Email provider webhook requests by provider and outcome (accepted or HTTP status).",
            ["provider", "outcome"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._last_id: int | None = None

    def tail_execution_log(self) -> int:
        """Feed the log rows appended since the last scrape into the counters."""
        with self._lock, session_scope() as session:
            if self._last_id is None:
                self._last_id = int(session.scalar(select(func.max(AOLExecutionLog.id))) or 0)
                return 0
            rows = session.execute(
                select(
                    AOLExecutionLog.id,
                    AOLExecutionLog.event,
                    AOLExecutionLog.duration_ms,
                    AOLExecutionLog.created_at_utc,
                    AOLAction.action_type,
                    AOLAction.not_before_utc,
                )
                .join(AOLAction, AOLAction.id == AOLExecutionLog.action_id)
                .where(AOLExecutionLog.id > self._last_id)
                .order_by(AOLExecutionLog.id)
                .limit(TAIL_BATCH)
            ).all()
            for row in rows:
                self._count(row)
            if rows:
                self._last_id = int(rows[-1].id)
            return len(rows)

    def _count(self, row: Any) -> None:
        action_type, task = row.action_type, f"aol.{row.action_type}"
        if row.event == LogEvent.CLAIMED.value:
            # Due time read now: a claim seen within a scrape of it still has its due time
            # (a later retry moves not_before_utc forward, and is then skipped as negative).
            waited = (row.created_at_utc - row.not_before_utc).total_seconds()
            if waited >= 0:
                self.latency.labels(action_type).observe(waited)
            return
        outcome = OUTCOMES.get(row.event)
        if outcome is None:
            return
        self.finished.labels(action_type, outcome).inc()
        if row.duration_ms is not None and outcome != "lease_expired":
            seconds = max(0.0, float(row.duration_ms) / 1000)
            self.duration.labels(action_type).observe(seconds)
            self.celery_runtime.labels(task).observe(seconds)
        if outcome == "success":
            self.celery_succeeded.labels(task).inc()
        elif outcome in ("failed", "dlq"):
            self.celery_failed.labels(task).inc()
        elif outcome == "retry":
            self.celery_retried.labels(task).inc()

    def exposition(self) -> bytes:
        self.tail_execution_log()
        return stats_ops.stats_prometheus().encode() + generate_latest(self.registry)


_metrics: Metrics | None = None
_create_lock = threading.Lock()


def metrics() -> Metrics:
    global _metrics
    with _create_lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics
