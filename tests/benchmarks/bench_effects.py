"""What every baseline's job does, shared by plain Celery, Dramatiq and Procrastinate.

Completions are counted in Redis, cheaply and honestly: each job ends with ONE pipelined
round trip (``INCR`` a counter and ``SET`` the time it finished), and each process records the
start of its first job once (``HSETNX``). aicmo's side of the same figures reads
``started_at_utc`` and ``finished_at_utc`` from its own rows, which it writes anyway.

The "one PostgreSQL write per job" variant writes a state row the way aicmo's engine does
for one action: ``INSERT .. ON CONFLICT`` of the row, then an ``UPDATE`` that finishes it, in
one transaction (aicmo: the enqueue's upsert, the claim and the SUCCESS transition).

Environment: ``BENCH_PLAIN_BROKER`` (the run's Redis database), ``BENCH_PLAIN_DSN`` (its
PostgreSQL database).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

COUNT_KEY = "bench:plain:done"
LAST_KEY = "bench:plain:last"
FIRST_KEY = "bench:plain:first"  # hash pid -> start of that process's first job
LATENCY_KEY = "bench:plain:latency"

STATE_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_state (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, "
    "status TEXT NOT NULL, attempts INTEGER NOT NULL, created_at TIMESTAMPTZ NOT NULL, "
    "updated_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ)"
)
UPSERT = (
    "INSERT INTO bench_state (key, status, attempts, created_at, updated_at) "
    "VALUES (%s, 'RUNNING', 1, now(), now()) "
    "ON CONFLICT (key) DO UPDATE SET status = 'RUNNING', "
    "attempts = bench_state.attempts + 1, updated_at = now()"
)
FINISH = (
    "UPDATE bench_state SET status = 'SUCCESS', finished_at = now(), updated_at = now() "
    "WHERE key = %s"
)

_local = threading.local()  # one connection per process and thread (Dramatiq, Procrastinate)
_first_seen: set[int] = set()


def _client() -> redis.Redis:
    key = f"redis-{os.getpid()}"
    client = getattr(_local, key, None)
    if client is None:
        client = redis.Redis.from_url(os.environ["BENCH_PLAIN_BROKER"])
        setattr(_local, key, client)
    return client


def done(started: float) -> None:
    """Count one finished job (one pipelined round trip)."""
    client = _client()
    pipe = client.pipeline(transaction=False)
    pipe.incr(COUNT_KEY)
    pipe.set(LAST_KEY, repr(time.time()))
    pipe.execute()
    pid = os.getpid()
    if pid not in _first_seen:
        _first_seen.add(pid)
        client.hsetnx(FIRST_KEY, str(pid), repr(started))


def stamp(t0: float) -> None:
    """Record ``t0`` (the caller's clock before sending) and when this job started."""
    _client().rpush(LATENCY_KEY, f"{t0!r} {time.time()!r}")


def _pg() -> Any:
    import psycopg

    key = f"pg-{os.getpid()}"
    conn = getattr(_local, key, None)
    if conn is None:
        conn = psycopg.connect(os.environ["BENCH_PLAIN_DSN"])
        setattr(_local, key, conn)
    return conn


def state_write(n: int) -> None:
    """One state row: ``INSERT .. ON CONFLICT`` then ``UPDATE``, one transaction."""
    conn = _pg()
    key = f"job-{n}"
    conn.execute(UPSERT, (key,))
    conn.execute(FINISH, (key,))
    conn.commit()
