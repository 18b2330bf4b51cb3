"""Dramatiq with its Redis broker, a reference column of ``make bench``.

``dramatiq tests.benchmarks.dramatiq_app --processes 2 --threads 1``: two worker processes of
one thread each, the shape of Celery's ``prefork -c 2`` (two processes running jobs). Default
middleware (age and time limits, retries, callbacks, pipelines) and defaults otherwise: what a
user would run. The jobs are :mod:`tests.benchmarks.bench_effects`'s, as for plain Celery.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from tests.benchmarks import bench_effects

QUEUE = "bench"

broker = RedisBroker(url=os.environ.get("BENCH_PLAIN_BROKER", "redis://127.0.0.1:6379/15"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(n: int) -> None:
    bench_effects.done(time.time())


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def pg_write(n: int) -> None:
    started = time.time()
    bench_effects.state_write(n)
    bench_effects.done(started)
