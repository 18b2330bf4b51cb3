"""Plain Celery, the baseline: the same worker settings as aicmo's app, no idempotency layer.

``celery -A tests.benchmarks.plain_app worker`` builds the app from the environment:

* ``BENCH_PLAIN_BROKER``: the broker (the harness's own Redis database);
* ``BENCH_PLAIN_EVENTS``: ``1`` (default) sends task events like aicmo's app (Flower needs
  them), ``0`` turns them off;
* ``BENCH_PLAIN_DSN``: the PostgreSQL database of the ``plain.pg_txn`` task.

Completions are counted in Redis, cheaply and honestly: each task ends with ONE pipelined
round trip (``INCR`` a counter and ``SET`` the time it finished), and each pool process
records the start of its first task once (``HSETNX``). aicmo's side of the same figures reads
``started_at_utc`` and ``finished_at_utc`` from its own rows, which it writes anyway.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue

QUEUE = "plain"
IDLE_QUEUE = "bench.idle"
COUNT_KEY = "bench:plain:done"
LAST_KEY = "bench:plain:last"
FIRST_KEY = "bench:plain:first"  # hash pid -> start of that process's first task
LATENCY_KEY = "bench:plain:latency"

PG_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_plain_effects "
    "(id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, done_at TIMESTAMPTZ NOT NULL)"
)

_clients: dict[int, redis.Redis] = {}
_pg: dict[int, Any] = {}
_first_seen: set[int] = set()


def config(broker_url: str, events: bool) -> dict[str, Any]:
    """tasks/config.py's worker settings, minus aicmo's queues and routing."""
    return {
        "broker_url": broker_url,
        "broker_transport_options": {"visibility_timeout": 3600},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_send_task_events": events,
        "task_send_sent_event": events,
        "task_default_queue": QUEUE,
        "task_default_exchange": "",
        "task_default_routing_key": QUEUE,
        "task_queues": [
            Queue(QUEUE, Exchange(""), routing_key=QUEUE),
            Queue(IDLE_QUEUE, Exchange(""), routing_key=IDLE_QUEUE),
        ],
        "enable_utc": True,
        "timezone": "UTC",
        "worker_hijack_root_logger": False,
    }


def _client() -> redis.Redis:
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        client = _clients[pid] = redis.Redis.from_url(os.environ["BENCH_PLAIN_BROKER"])
    return client


def _done(started: float) -> None:
    client = _client()
    pipe = client.pipeline(transaction=False)
    pipe.incr(COUNT_KEY)
    pipe.set(LAST_KEY, repr(time.time()))
    pipe.execute()
    pid = os.getpid()
    if pid not in _first_seen:
        _first_seen.add(pid)
        client.hsetnx(FIRST_KEY, str(pid), repr(started))


def _pg_connection() -> Any:
    import psycopg

    pid = os.getpid()
    conn = _pg.get(pid)
    if conn is None:
        conn = _pg[pid] = psycopg.connect(os.environ["BENCH_PLAIN_DSN"])
    return conn


def make_app(broker_url: str, events: bool = True) -> Celery:
    app = Celery("plain", set_as_current=False)
    app.config_from_object(config(broker_url, events))

    @app.task(name="plain.noop", shared=False, acks_late=True, ignore_result=True)
    def noop(n: int) -> None:
        """Do nothing but count itself."""
        _done(time.time())

    @app.task(name="plain.pg_txn", shared=False, acks_late=True, ignore_result=True)
    def pg_txn(n: int) -> None:
        """One small PostgreSQL transaction (an INSERT and its COMMIT), then count itself."""
        started = time.time()
        conn = _pg_connection()
        conn.execute("INSERT INTO bench_plain_effects (n, done_at) VALUES (%s, now())", (n,))
        conn.commit()
        _done(started)

    @app.task(name="plain.stamp", shared=False, acks_late=True, ignore_result=True)
    def stamp(t0: float) -> None:
        """Record how long after ``t0`` (the caller's send) this task started."""
        started = time.time()
        _client().rpush(LATENCY_KEY, repr(started - t0))

    return app


def _from_env() -> Celery:
    return make_app(
        os.environ.get("BENCH_PLAIN_BROKER", "redis://127.0.0.1:6379/15"),
        os.environ.get("BENCH_PLAIN_EVENTS", "1") == "1",
    )


app = _from_env()
