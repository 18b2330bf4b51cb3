"""Plain Celery, the baseline: aicmo's own Celery settings, no idempotency layer.

``celery -A tests.benchmarks.plain_app worker`` builds the app from the environment:

* ``BENCH_PLAIN_CONFIG``: the Celery settings as JSON, which the harness derives from
  ``tasks/config.py`` (:mod:`tests.benchmarks.bench_settings`), so both sides always run with
  the same settings; ``BENCH_PLAIN_TASK_OPTIONS``: the options of aicmo's tasks (acks, time
  limits), applied to every task here;
* ``BENCH_PLAIN_BROKER`` and ``BENCH_PLAIN_DSN``: see :mod:`tests.benchmarks.bench_effects`.

This module imports Celery and redis only (psycopg when the PostgreSQL task runs), so the
worker's memory and start-up are those of a plain Celery worker.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from tests.benchmarks import bench_effects

QUEUE = "plain"
IDLE_QUEUE = "bench.idle"
COUNT_KEY = bench_effects.COUNT_KEY
LAST_KEY = bench_effects.LAST_KEY
FIRST_KEY = bench_effects.FIRST_KEY
LATENCY_KEY = bench_effects.LATENCY_KEY


def make_app(config: dict[str, Any], task_options: dict[str, Any]) -> Celery:
    app = Celery("plain", set_as_current=False)
    app.config_from_object(
        {
            **config,
            "task_default_queue": QUEUE,
            "task_default_routing_key": QUEUE,
            "task_queues": [
                Queue(QUEUE, Exchange(""), routing_key=QUEUE),
                Queue(IDLE_QUEUE, Exchange(""), routing_key=IDLE_QUEUE),
            ],
        }
    )
    options = {"shared": False, **task_options}

    @app.task(name="plain.noop", **options)
    def noop(n: int) -> None:
        """Do nothing but count itself."""
        bench_effects.done(time.time())

    @app.task(name="plain.pg_txn", **options)
    def pg_txn(n: int) -> None:
        """One state row written like aicmo's (INSERT .. ON CONFLICT + UPDATE), then count."""
        started = time.time()
        bench_effects.state_write(n)
        bench_effects.done(started)

    @app.task(name="plain.stamp", **options)
    def stamp(t0: float) -> None:
        """Record how long after ``t0`` (the caller's clock before sending) this task started."""
        bench_effects.stamp(t0)

    return app


def _from_env() -> Celery:
    raw = os.environ.get("BENCH_PLAIN_CONFIG")
    if not raw:
        raise RuntimeError(
            "BENCH_PLAIN_CONFIG is not set: the plain app takes aicmo's Celery settings from "
            "the benchmark harness (tests/benchmarks/bench_settings.py)"
        )
    return make_app(json.loads(raw), json.loads(os.environ.get("BENCH_PLAIN_TASK_OPTIONS", "{}")))


app = _from_env()
