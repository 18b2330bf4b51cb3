"""Procrastinate (jobs in PostgreSQL), a reference column of ``make bench``.

``procrastinate --app=tests.benchmarks.procrastinate_app.app worker --concurrency 2``: one
worker process running two jobs at a time (Procrastinate's own model: an asyncio worker;
synchronous tasks run in its threads). Defaults otherwise. The jobs are
:mod:`tests.benchmarks.bench_effects`'s, as for plain Celery.
"""

from __future__ import annotations

import os
import time

import procrastinate

from tests.benchmarks import bench_effects

QUEUE = "bench"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_PLAIN_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
)


@app.task(name="bench.noop", queue=QUEUE)
def noop(n: int) -> None:
    bench_effects.done(time.time())


@app.task(name="bench.pg_write", queue=QUEUE)
def pg_write(n: int) -> None:
    started = time.time()
    bench_effects.state_write(n)
    bench_effects.done(started)
