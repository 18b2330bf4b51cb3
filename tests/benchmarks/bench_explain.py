"""``profiles``: where the time and memory behind each missed target go, measured in the run.

Taken after the figures, on the same machine, against the same services:

- **worker CPU by package**: py-spy (``--gil``: a stack counts only while it holds the GIL, so
  a wait on a socket does not) samples the plain and the aicmo worker through the e2e shape;
  each process role's psutil CPU per action is split in proportion to its samples. The e2e,
  drain and latency figures are bounded by this CPU.
- **start latency by offered rate**: the latency figure at lower rates, to say up to which
  rate aicmo's p99 stays within plain's + 10 ms on this machine.
- **one enqueue**: pyinstrument's wall-clock profile of ``.delay`` (one autocommit INSERT, then
  the publish) by package, beside the floors no durable enqueue goes under: a one-row INSERT
  committed by itself with and without waiting for the WAL flush, and one Redis LPUSH.
- **memory by import**: a fresh interpreter imports, step by step, what a worker's processes
  import (RSS after each step), next to the workers' RSS measured in the e2e figure.
- **the embedded worker's CPU by package** (SQLite + kombu's filesystem transport).

The data goes into ``Results.profiles``; :mod:`tests.benchmarks.bench_explain_report` writes
the BENCHMARKS.md section.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.benchmarks.bench_env import BenchEnv, Worker
from tests.benchmarks.bench_explain_report import (
    IMPORT_STEPS,
    LADDER,
    LADDER_SECONDS,
    PLAIN_STEP,
    SAMPLE_HZ,
    split_cpu,
)
from tests.benchmarks.bench_figures import Bench
from tests.benchmarks.bench_profile import (
    package_of,
    py_spy_record,
    sampled_e2e,
    self_by_package,
)
from tests.support.processes import ROOT

_IMPORT_SCRIPT = """
import json, sys, psutil
process = psutil.Process()
out = [process.memory_info().rss]
for code in json.loads(sys.argv[1]):
    exec(code)
    out.append(process.memory_info().rss)
print(json.dumps(out))
"""


def figure_profiles(bench: Bench, count: int) -> None:
    """Every profile, into ``bench.results.profiles`` (one broken part does not cost the
    others: its error is kept instead)."""
    parts: dict[str, Callable[[], Any]] = {
        "worker_cpu": lambda: {k: worker_cpu(bench, k, count) for k in ("plain", "aicmo")},
        "latency_ladder": lambda: latency_ladder(bench),
        "enqueue": lambda: enqueue_profile(bench, min(count, 1000)),
        "memory": lambda: import_costs(bench.env),
        "embedded": lambda: embedded_cpu(bench, min(count, 2000)),
        "fanout": lambda: fanout_profile(bench),
    }
    for name, measure in parts.items():
        print(f"  [profiles] {name} ...", flush=True)
        try:
            bench.results.profiles[name] = measure()
        except Exception as exc:  # report it and go on: the figures are already measured
            bench.results.profiles[name] = {"error": f"{type(exc).__name__}: {exc}"}
            bench.env.stop_workers()


# -- measuring -------------------------------------------------------------------------------


def worker_cpu(bench: Bench, kind: str, count: int) -> dict[str, Any]:
    raw = bench.env.tmp / f"profile-{kind}.raw.txt"
    pid, rate, cpu = sampled_e2e(bench, kind, count, raw, rate=SAMPLE_HZ, gil=True)
    main, pool = self_by_package(raw, pid)
    return {
        "count": count,
        "rate": rate,
        **cpu,
        "main": split_cpu(main, cpu["main_cpu_ms"]),
        "pool": split_cpu(pool, cpu["pool_cpu_ms"]),
        "samples": sum(main.values()) + sum(pool.values()),
    }


def latency_ladder(bench: Bench) -> list[dict[str, Any]]:
    sizes = bench.sizes
    out = []
    try:
        for rate in LADDER:
            bench.sizes = dataclasses.replace(
                sizes, latency_rate=rate, latency_seconds=LADDER_SECONDS
            )
            row: dict[str, Any] = {"rate": rate}
            for kind in ("plain", "aicmo"):
                measured = bench.run_latency(kind)
                row[kind] = {k: measured[k] for k in ("p50_ms", "p99_ms", "sent_per_s")}
            out.append(row)
    finally:
        bench.sizes = sizes
    return out


def enqueue_profile(bench: Bench, count: int) -> dict[str, Any]:
    from pyinstrument import Profiler

    bench.reset()
    for n in range(20):  # warm: connections, statement caches, the clock offset
        bench.enqueue_one("aicmo", n)
    unprofiled = _per_call_ms(count, lambda n: bench.enqueue_one("aicmo", n))
    profiler = Profiler(interval=0.001)
    profiler.start()
    started = time.perf_counter()
    for n in range(count):
        bench.enqueue_one("aicmo", n)
    elapsed = time.perf_counter() - started
    session = profiler.stop()
    by_package: Counter[str] = Counter()
    _self_times(session.root_frame(), by_package)
    total = sum(by_package.values()) or 1.0
    per_call = elapsed / count * 1000
    bench.reset()
    plain = _per_call_ms(count, lambda n: bench.enqueue_one("plain", n))
    bench.reset()
    return {
        "count": count,
        "aicmo_ms": unprofiled,
        "profiled_ms": per_call,
        # Shares of the profiled run, scaled to the unprofiled time per call.
        "by_package_ms": {k: unprofiled * v / total for k, v in by_package.most_common()},
        "plain_ms": plain,
        **floors(bench.env, count),
    }


def _self_times(frame: Any, into: Counter[str], caller: str = "?") -> None:
    """Self time by package; a C function's (a socket read, json) goes to the package that
    called it."""
    if frame is None:
        return
    path = frame.file_path or ""
    package = caller if not path or path.startswith("<") else package_of(path)
    if frame.total_self_time:
        into[package] += frame.total_self_time
    for child in frame.children:
        if not child.is_synthetic:
            _self_times(child, into, package)


def _per_call_ms(count: int, call: Callable[[int], Any]) -> float:
    for n in range(20):
        call(n)
    started = time.perf_counter()
    for n in range(count):
        call(n)
    return (time.perf_counter() - started) / count * 1000


def floors(env: BenchEnv, count: int) -> dict[str, float]:
    """What no durable enqueue goes under on this machine: one row committed (the WAL flush
    waited for, and not), and one message pushed to Redis."""
    payload = json.dumps({"id": 1, "task": "aol.T_NOOP", "body": "x" * 900})
    with psycopg.connect(env.psycopg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, p jsonb)")

        def insert(n: int) -> None:  # autocommit: the statement commits by itself
            conn.execute("INSERT INTO bench_floor (p) VALUES (%s) RETURNING id", (Jsonb({"n": n}),))

        durable = _per_call_ms(count, insert)
        conn.execute("SET synchronous_commit = off")
        no_flush = _per_call_ms(count, insert)
        conn.execute("DROP TABLE bench_floor")
    env.redis.delete("bench_floor")
    push = _per_call_ms(count, lambda _n: env.redis.lpush("bench_floor", payload))
    env.redis.delete("bench_floor")
    return {"durable_commit_ms": durable, "no_flush_commit_ms": no_flush, "redis_push_ms": push}


def import_costs(env: BenchEnv) -> dict[str, Any]:
    """RSS growth (MiB) of each import step, in fresh interpreters with the run's settings."""

    def run(codes: list[str]) -> list[float]:
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT_SCRIPT, json.dumps(codes)],
            cwd=ROOT,
            env=env.base_env({**env.aicmo_env(), **env.plain_env()}),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        rss = json.loads(done.stdout.strip().splitlines()[-1])
        return [(b - a) / 2**20 for a, b in itertools.pairwise(rss)]

    def median_of_three(codes: list[str]) -> list[float]:
        runs = [run(codes) for _ in range(3)]
        return [statistics.median(step) for step in zip(*runs, strict=True)]

    aicmo = median_of_three([code for _, code in IMPORT_STEPS])
    plain = median_of_three([IMPORT_STEPS[0][1], PLAIN_STEP[1]])
    return {
        "steps": [label for label, _ in IMPORT_STEPS],
        "mib": aicmo,
        "plain_app_mib": plain[1],
    }


def embedded_cpu(bench: Bench, count: int) -> dict[str, Any]:
    raw = bench.env.tmp / "profile-embedded.raw.txt"
    pids: list[int] = []

    @contextmanager
    def sampled(worker: Worker) -> Iterator[None]:
        pids.append(worker.pid)
        with py_spy_record(bench.env, worker.pid, raw, rate=SAMPLE_HZ, gil=True):
            yield

    measured = bench.run_embedded("aicmo", count, sampled)
    main, pool = self_by_package(raw, pids[0])
    return {
        "count": count,
        **measured,
        "main": split_cpu(main, measured["main_cpu_ms"]),
        "pool": split_cpu(pool, measured["pool_cpu_ms"]),
    }


def fanout_profile(bench: Bench) -> dict[str, Any]:
    """Beat's fan-out over the figure's campaigns under pyinstrument (wall clock), by package."""
    from pyinstrument import Profiler

    from aicmo.db import session_scope

    fan_out = bench.find_fanout()
    bench.reset()
    bench.pg.execute("TRUNCATE cam_campaigns CASCADE")
    bench._seed_campaigns(bench.sizes.campaigns)
    bench.pg.execute("VACUUM ANALYZE cam_campaigns")
    profiler = Profiler(interval=0.001)
    profiler.start()
    started, cpu = time.perf_counter(), time.process_time()
    with session_scope() as session:  # its commit publishes the ticks
        fan_out(session)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    by_package: Counter[str] = Counter()
    _self_times(profiler.stop().root_frame(), by_package)
    total = sum(by_package.values()) or 1.0
    bench.reset()
    return {
        "campaigns": bench.sizes.campaigns,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "by_package_s": {k: elapsed * v / total for k, v in by_package.most_common()},
    }
