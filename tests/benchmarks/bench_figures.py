"""The figures, each measured for plain Celery and for aicmo in the same run.

Every ``run_*`` method measures one repetition of one side ("kind") and returns its metrics;
:meth:`Bench.measure` repeats them. Within a repetition aicmo runs right between its two
headline baselines (plain with aicmo's settings, plain with Celery's default events), and the
order is reversed from one repetition to the next, so each repetition pairs the sides back to
back and a burst of load on the machine does not always land on the same side. The report
takes the median of the per-repetition ratios. Every run records the 1-minute load average
just before it starts (``load1_before``) and the worker's CPU per action.

This module imports aicmo, so it must be imported after :meth:`BenchEnv.install_process_env`.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

from aicmo.db import get_engine, session_factory, session_scope
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.sweeper import Sweeper
from tests.benchmarks import bench_effects, plain_app
from tests.benchmarks.bench_actions import STAMP
from tests.benchmarks.bench_env import BenchEnv, Worker
from tests.benchmarks.bench_results import REFERENCES, Results, Sizes, run_order, served_rate
from tests.benchmarks.bench_settings import plain_config, plain_task_options
from tests.support.processes import ROOT, wait_for
from tests.support.recording import RecordingDispatcher

AICMO_QUEUE = "aol"
NOOP = "T_NOOP"
WARMUP = 20
BATCH = 100  # the e2e context row "aicmo producer in batches"


class NotMeasured(Exception):
    """A figure that cannot be measured on this code (yet); the reason goes in the table."""


@dataclass
class Done:
    count: int
    failed: int
    first_start: float | None  # epoch seconds
    last_done: float | None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 2,000 samples is the 1,980th)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def others_cores(window: float = 0.5) -> float:
    """Cores kept busy by processes other than this one over ``window`` seconds (taken
    between runs, when none of the run's workers is running): the machine's background load,
    which the 1-minute load average mixes with the run's own previous minute."""
    try:
        with open("/proc/stat") as stat:
            first = [int(part) for part in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    own, started = time.process_time(), time.monotonic()
    time.sleep(window)
    with open("/proc/stat") as stat:
        last = [int(part) for part in stat.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    busy = [b - a for a, b in zip(first, last, strict=True)]
    busy_seconds = (sum(busy) - busy[3] - busy[4]) / tick
    own_seconds = time.process_time() - own
    return max(0.0, (busy_seconds - own_seconds) / (time.monotonic() - started))


def machine_before() -> dict[str, float]:
    """The load just before a run: the 1-minute load average and the others' cores."""
    return {"load1_before": os.getloadavg()[0], "others_cores_before": others_cores()}


def per_action(
    before: tuple[float, float], after: tuple[float, float], count: int
) -> dict[str, float]:
    """The worker's CPU milliseconds per action, main process and pool children apart."""
    return {
        "main_cpu_ms": (after[0] - before[0]) / count * 1000,
        "pool_cpu_ms": (after[1] - before[1]) / count * 1000,
    }


@contextmanager
def statement_times(engine: Any) -> Iterator[dict[str, float]]:
    """Milliseconds per statement (its first 90 characters) run through ``engine``."""
    times: dict[str, float] = {}
    started: list[float] = []

    def before(*_: Any) -> None:
        started.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        name = " ".join(statement.split())[:90]
        times[name] = times.get(name, 0.0) + (time.perf_counter() - started.pop()) * 1000

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield times
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


class Bench:
    def __init__(
        self,
        env: BenchEnv,
        sizes: Sizes,
        reps: int,
        context: bool,
        log_level: str = "INFO",
        headline_reps: int | None = None,
        references: bool = False,
    ) -> None:
        self.env = env
        self.sizes = sizes
        self.reps = reps
        self.headline_reps = headline_reps or reps
        self.context = context
        self.with_references = references
        self.log_level = log_level
        self.results = Results()
        self.pg = psycopg.connect(env.psycopg_dsn, autocommit=True)
        self.pg.execute(bench_effects.STATE_DDL)
        self.redis = env.redis
        # The producer's side of plain Celery, with the same settings as its workers (the
        # sent event, when on, is the producer's cost).
        self.plain = {
            events: plain_app.make_app(plain_config(env.broker_url, events), plain_task_options())
            for events in (None, False)
        }
        self.sessions = session_factory()
        self.last_sweep_statements: dict[str, float] = {}
        self.reference_apps: dict[str, Any] = {}

    def close(self) -> None:
        procrastinate = self.reference_apps.get("procrastinate")
        if procrastinate is not None:
            procrastinate.app.close()
        self.pg.close()

    # -- plumbing --------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty tables and the Redis database between runs (no worker is running)."""
        self.pg.execute("TRUNCATE aol_execution_logs, aol_actions, bench_state RESTART IDENTITY")
        if self.reference_apps.get("procrastinate") is not None:
            self.pg.execute("TRUNCATE procrastinate_jobs CASCADE")
        self.redis.flushdb()

    def start_worker(self, kind: str, queues: list[str] | None = None) -> Worker:
        if kind in REFERENCES:
            return self.start_reference(kind)
        worker_kind = {"plain-pg": "plain", "aicmo-batch": "aicmo", "aicmo-bulk": "aicmo"}.get(
            kind, kind
        )
        if queues is None:
            queues = [AICMO_QUEUE if worker_kind == "aicmo" else plain_app.QUEUE]
        return self.env.worker(worker_kind, queues, log_level=self.log_level).start()

    def stop_worker(self, worker: Worker) -> None:
        worker.stop()
        if worker in self.env.workers:
            self.env.workers.remove(worker)

    def plain_task(self, kind: str, name: str = "plain.noop") -> Any:
        if kind == "plain-pg":
            name = "plain.pg_txn"
        return self.plain[False if kind == "plain-noevents" else None].tasks[name]

    def aicmo_task(self, action_type: str = NOOP) -> Any:
        """aicmo's Celery task for ``action_type``: ``.delay`` is what a Celery user calls."""
        from tasks.celery_app import app

        return app.tasks[f"aol.{action_type}"]

    def enqueue_one(self, kind: str, n: int) -> None:
        if kind == "aicmo":
            self.aicmo_task().delay({"n": n})  # in a transaction of its own
        elif kind == "aicmo-outbox":
            # In the caller's transaction (the outbox: atomic with the caller's own writes).
            with session_scope() as session:
                ActionQueue.enqueue_action(session, NOOP, {"n": n})
        elif kind in REFERENCES:
            framework, job = REFERENCES[kind]
            actor = getattr(self.reference_apps[framework], job)
            if framework == "dramatiq":
                actor.send(n)
            else:
                actor.defer(n=n)
        else:
            self.plain_task(kind).apply_async((n,))

    def enqueue_bulk(self, kind: str, count: int, chunk: int = 10_000) -> None:
        if kind == "aicmo":
            for start in range(0, count, chunk):
                with session_scope() as session:
                    ActionQueue.enqueue_many(
                        session, [(NOOP, {"n": n}) for n in range(start, min(count, start + chunk))]
                    )
        else:
            task = self.plain_task(kind)
            for n in range(count):
                task.apply_async((n,))

    def done(self, kind: str, action_type: str = NOOP) -> Done:
        if kind == "aicmo":
            row = self.pg.execute(
                "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), "
                "count(*) FILTER (WHERE status IN ('FAILED', 'DLQ')), "
                "extract(epoch FROM min(started_at_utc)), "
                "extract(epoch FROM max(finished_at_utc)) "
                "FROM aol_actions WHERE action_type = %s",
                (action_type,),
            ).fetchone()
            assert row is not None
            return Done(
                int(row[0]),
                int(row[1]),
                float(row[2]) if row[2] is not None else None,
                float(row[3]) if row[3] is not None else None,
            )
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(plain_app.COUNT_KEY)
        pipe.get(plain_app.LAST_KEY)
        pipe.hvals(plain_app.FIRST_KEY)
        count, last, firsts = pipe.execute()
        return Done(
            int(count or 0),
            0,
            min(float(v) for v in firsts) if firsts else None,
            float(last) if last else None,
        )

    def wait_done(self, kind: str, count: int, worker: Worker, action_type: str = NOOP) -> Done:
        timeout = max(60.0, count / 20)
        deadline = time.monotonic() + timeout
        while True:
            state = self.done(kind, action_type)
            if state.failed:
                raise RuntimeError(
                    f"{kind}: {state.failed} action(s) failed; see {worker.log_path}"
                )
            if state.count >= count:
                return state
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"{kind} worker died:\n{worker.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{kind}: {state.count}/{count} done after {timeout:.0f}s ({worker.log_path})"
                )
            time.sleep(0.05)

    def measure(
        self,
        figure: str,
        kinds: list[str],
        run: Callable[[str], dict[str, float]],
        reps: int | None = None,
    ) -> None:
        started = time.monotonic()
        self.results.load_before[figure] = os.getloadavg()
        for rep in range(reps or self.reps):
            for kind in run_order(kinds, rep):
                before = machine_before()
                metrics = run(kind)
                self.results.add(figure, kind, {**metrics, **before})
                self.progress(figure, kind, rep, metrics, reps or self.reps)
        self.results.seconds[figure] = time.monotonic() - started
        self.results.load[figure] = os.getloadavg()

    def progress(
        self, figure: str, kind: str, rep: int, metrics: dict[str, float], reps: int | None = None
    ) -> None:
        shown = ", ".join(
            f"{name} {value:,.0f}" if abs(value) >= 100 else f"{name} {value:.3g}"
            for name, value in metrics.items()
        )
        print(f"  [{figure}] {kind:<16} rep {rep + 1}/{reps or self.reps}: {shown}", flush=True)

    def kinds(self, *extra: str) -> list[str]:
        """plain and aicmo, plus plain with Celery's default events (the headline's second
        baseline, always), plus the context kinds when context is on."""
        return ["plain", "aicmo", "plain-noevents", *(extra if self.context else ())]

    # -- other frameworks ------------------------------------------------------------------

    def references(self) -> list[str]:
        """The reference kinds whose framework is installed (the others are noted)."""
        if not self.with_references:
            return []
        found = []
        for kind, (framework, _job) in REFERENCES.items():
            app = self._reference_app(framework)
            if app is not None:
                found.append(kind)
        return found

    def _reference_app(self, framework: str) -> Any:
        if framework in self.reference_apps:
            return self.reference_apps[framework]
        try:
            module = importlib.import_module(f"tests.benchmarks.{framework}_app")
        except ImportError as exc:
            self.results.not_measured[framework] = (
                f"{exc}; `pip install -e '.[bench]'` (make bench does)"
            )
            self.reference_apps[framework] = None
            return None
        from importlib.metadata import version

        self.results.versions[framework] = version(framework)
        if framework == "procrastinate":
            module.app.open()
            try:
                module.app.schema_manager.apply_schema()
            except Exception as exc:  # applied already by an earlier figure of this run
                if "already exists" not in str(exc):
                    raise
        self.reference_apps[framework] = module
        return module

    def start_reference(self, kind: str) -> Worker:
        framework, _job = REFERENCES[kind]
        python = sys.executable
        if framework == "dramatiq":
            # Two processes of one thread: the shape of Celery's prefork -c 2.
            argv = [python, "-m", "dramatiq", "tests.benchmarks.dramatiq_app"]
            argv += ["--processes", "2", "--threads", "1"]
            worker = self.env.other_worker(kind, argv, "Worker process is ready for action.", 2)
        else:
            # One asyncio worker running two jobs at a time; -v: INFO, like the Celery workers.
            argv = [python, "-m", "procrastinate", "-v"]
            argv += ["--app=tests.benchmarks.procrastinate_app.app", "worker"]
            argv += ["--concurrency", "2", "--queues", "bench"]
            worker = self.env.other_worker(kind, argv, "Starting worker")
        return worker.start()

    # -- 1. end to end ---------------------------------------------------------------------

    def figure_e2e(self) -> None:
        """N no-op actions enqueued one by one while one worker consumes: first enqueue to
        last completion. Memory is read from the same workers right after."""
        # aicmo-bulk is a headline (bulk e2e, batched), so it runs with or without context;
        # its ratios are against plain's per-task rate and Dramatiq + PG from the same run.
        kinds = [*self.kinds("plain-pg", "aicmo-batch"), "aicmo-bulk", *self.references()]
        self.measure("e2e", kinds, self.run_e2e, self.headline_reps)

    def run_e2e(self, kind: str) -> dict[str, float]:
        count = self.sizes.bulk if kind == "aicmo-bulk" else self.sizes.e2e
        self.reset()
        worker = self.start_worker(kind)
        try:
            cpu_before = worker.cpu_seconds()
            t_first = time.time()
            if kind == "aicmo-bulk":
                # One call, as a campaign's fan-out would: the messages carry batches of ids.
                with session_scope() as session:
                    ActionQueue.enqueue_many(session, [(NOOP, {"n": n}) for n in range(count)])
            elif kind == "aicmo-batch":
                for start in range(0, count, BATCH):
                    with session_scope() as session:
                        ActionQueue.enqueue_many(
                            session,
                            [(NOOP, {"n": n}) for n in range(start, min(count, start + BATCH))],
                        )
            else:
                for n in range(count):
                    self.enqueue_one(kind, n)
            t_enqueued = time.time()
            counted = (
                "aicmo"
                if kind in ("aicmo-batch", "aicmo-bulk")
                else "plain"
                if kind in REFERENCES
                else kind
            )
            state = self.wait_done(counted, count, worker)
            memory = worker.memory()
            cpu = per_action(cpu_before, worker.cpu_seconds(), count)
        finally:
            self.stop_worker(worker)
        assert state.last_done is not None
        elapsed = state.last_done - t_first
        return {
            "rate": count / elapsed,
            "seconds": elapsed,
            "enqueue_rate": count / (t_enqueued - t_first),
            **cpu,
            **memory,
        }

    # -- 2. drain --------------------------------------------------------------------------

    def figure_drain(self) -> None:
        """N actions queued first, then a worker starts: first task start to last done."""
        self.measure("drain", self.kinds(), self.run_drain, self.headline_reps)

    def run_drain(self, kind: str) -> dict[str, float]:
        count = self.sizes.drain
        self.reset()
        if kind == "aicmo":
            # One message per action, as plain's: a bulk enqueue would send batch messages
            # (the bulk e2e row measures those).
            for n in range(count):
                self.enqueue_one(kind, n)
        else:
            self.enqueue_bulk(kind, count)
        queue = AICMO_QUEUE if kind == "aicmo" else plain_app.QUEUE
        queued = int(self.redis.llen(queue))
        if queued != count:
            raise RuntimeError(f"{kind}: {queued} messages queued, expected {count}")
        worker = self.env.worker(kind, [queue], log_level=self.log_level)
        try:
            worker.start()
            t_ready = time.time()  # within the 50 ms poll of the "ready" line
            cpu_before = worker.cpu_seconds()
            state = self.wait_done(kind, count, worker)
            cpu = per_action(cpu_before, worker.cpu_seconds(), count)
        finally:
            self.stop_worker(worker)
        assert state.first_start is not None and state.last_done is not None
        return {
            "rate": count / (state.last_done - state.first_start),
            "rate_from_ready": count / (state.last_done - t_ready),
            **cpu,
        }

    # -- 3. enqueue ------------------------------------------------------------------------

    def figure_enqueue_one(self) -> None:
        """``.delay`` per action vs ``apply_async`` per task, no worker running; in context,
        ``enqueue_action`` in the caller's transaction and its commit."""
        kinds = ["plain", "aicmo", *(["aicmo-outbox"] if self.context else [])]
        self.measure("enqueue_one", kinds, self.run_enqueue_one)

    def run_enqueue_one(self, kind: str) -> dict[str, float]:
        count = self.sizes.enqueue_one
        self.reset()
        for n in range(WARMUP):
            self.enqueue_one(kind, n)
        started = time.perf_counter()
        cpu = time.process_time()
        for n in range(count):
            self.enqueue_one(kind, n)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        return {"rate": count / elapsed, "cpu_ms_each": cpu / count * 1000}

    def figure_enqueue_bulk(self) -> None:
        """One enqueue_many of N actions (and its commit, which publishes N messages) vs
        apply_async N times in a loop."""
        self.measure("enqueue_bulk", ["plain", "aicmo"], self.run_enqueue_bulk)

    def run_enqueue_bulk(self, kind: str) -> dict[str, float]:
        count = self.sizes.enqueue_bulk
        self.reset()
        self.enqueue_bulk(kind, WARMUP)
        started = time.perf_counter()
        cpu = time.process_time()
        self.enqueue_bulk(kind, count, chunk=count)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        return {"rate": count / elapsed, "cpu_ms_each": cpu / count * 1000}

    # -- 4. start latency ------------------------------------------------------------------

    def figure_latency(self) -> None:
        """A steady 200 actions/s: the caller's commit (plain: apply_async) to the handler's
        first line, p50 and p99."""
        self.measure("latency", ["plain", "aicmo"], self.run_latency)

    def run_latency(self, kind: str) -> dict[str, float]:
        rate, seconds = self.sizes.latency_rate, self.sizes.latency_seconds
        count = max(1, int(rate * seconds))
        self.reset()
        worker = self.start_worker(kind)
        try:
            if kind == "aicmo":
                stamps, (lag, sent_rate), cpu = self._latency_aicmo(count, rate, worker)
            else:
                stamps, (lag, sent_rate), cpu = self._latency_plain(count, rate, worker)
        finally:
            self.stop_worker(worker)
        ms = [(started - t0) * 1000 for t0, started in stamps]
        return {
            "p50_ms": percentile(ms, 0.50),
            "p99_ms": percentile(ms, 0.99),
            "max_ms": max(ms),
            "samples": len(ms),
            "max_send_lag_ms": lag * 1000,
            "sent_per_s": sent_rate,
            "served_per_s": served_rate(stamps),
            **cpu,
        }

    def _paced(self, count: int, rate: float, send: Callable[[int], None]) -> tuple[float, float]:
        """Call ``send`` ``count`` times at ``rate`` per second; return the worst lag behind
        that schedule and the rate actually reached (lower when a send is slower than
        1/rate: then the producer, not the worker, sets the pace)."""
        start = time.perf_counter()
        lag = 0.0
        for n in range(count):
            due = start + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                lag = max(lag, -wait)
            send(n)
        elapsed = time.perf_counter() - start
        return lag, (count - 1) / elapsed if count > 1 and elapsed > 0 else rate

    def _latency_aicmo(
        self, count: int, rate: float, worker: Worker
    ) -> tuple[list[tuple[float, float]], tuple[float, float], dict[str, float]]:
        sent: dict[int, float] = {}
        task = self.aicmo_task(STAMP)

        def send(n: int) -> None:
            # The clock starts where the caller starts asking, before the INSERT: what the
            # caller waits for is the enqueue, its commit and the publish, as with plain's
            # apply_async.
            t0 = time.time()
            sent[task.delay({"n": n}).action_id] = t0  # commits, then publishes

        for n in range(WARMUP):
            send(n)
        self.wait_done("aicmo", WARMUP, worker, STAMP)
        sent.clear()
        cpu_before = worker.cpu_seconds()
        paced = self._paced(count, rate, send)
        self.wait_done("aicmo", WARMUP + count, worker, STAMP)
        cpu = per_action(cpu_before, worker.cpu_seconds(), count)
        rows = self.pg.execute(
            "SELECT id, (result_json->>'started')::float8 FROM aol_actions WHERE id = ANY(%s)",
            (list(sent),),
        ).fetchall()
        return [(sent[action_id], started) for action_id, started in rows], paced, cpu

    def _latency_plain(
        self, count: int, rate: float, worker: Worker
    ) -> tuple[list[tuple[float, float]], tuple[float, float], dict[str, float]]:
        task = self.plain_task("plain", "plain.stamp")
        for _ in range(WARMUP):
            task.apply_async((time.time(),))
        wait_for(
            lambda: self.redis.llen(plain_app.LATENCY_KEY) >= WARMUP, 60, message="plain warm-up"
        )
        self.redis.delete(plain_app.LATENCY_KEY)

        def send(n: int) -> None:
            task.apply_async((time.time(),))  # the clock starts before apply_async

        cpu_before = worker.cpu_seconds()
        paced = self._paced(count, rate, send)
        wait_for(
            lambda: self.redis.llen(plain_app.LATENCY_KEY) >= count,
            60,
            message=f"plain latency tasks ({worker.log_path})",
        )
        cpu = per_action(cpu_before, worker.cpu_seconds(), count)
        stamps = []
        for raw in self.redis.lrange(plain_app.LATENCY_KEY, 0, -1):
            t0, started = raw.split()
            stamps.append((float(t0), float(started)))
        return stamps, paced, cpu

    # -- 5. sweeper ------------------------------------------------------------------------

    def figure_sweeper(self) -> None:
        """One sweep with N terminal rows and ``sweep_due`` due rows, for N small then large."""
        started = time.monotonic()
        self.reset()
        sweeper = Sweeper()
        sweeper.sweep()  # warm: connections, the broker canary, imports
        due_ids = self._seed_due(self.sizes.sweep_due)
        added = 0
        self.results.load_before["sweeper"] = os.getloadavg()
        for label, total in (("small", self.sizes.sweep_small), ("large", self.sizes.sweep_large)):
            seed_started = time.monotonic()
            self._seed_terminal(added, total - added)
            added = total
            self.pg.execute("VACUUM ANALYZE aol_actions")
            self.results.note(
                "sweeper",
                f"{total:,} terminal rows seeded in {time.monotonic() - seed_started:.1f} s",
            )
            for rep in range(self.reps):
                before = machine_before()
                metrics = self._one_sweep(sweeper, due_ids)
                self.results.add(f"sweeper_{label}", "aicmo", {**metrics, **before})
                self.progress(f"sweeper_{label}", "aicmo", rep, metrics)
            sweeps = self.results.profiles.setdefault("sweeper", {})
            sweeps[f"{total:,}"] = self.last_sweep_statements
        self.results.seconds["sweeper"] = time.monotonic() - started
        self.results.load["sweeper"] = os.getloadavg()

    def _seed_terminal(self, offset: int, count: int) -> None:
        self.pg.execute(
            """
            INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,
                not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc,
                started_at_utc, finished_at_utc, queued_at_utc)
            SELECT 'old-' || n, 'T_NOOP', '{"n": 0}'::jsonb,
                   (ARRAY['SUCCESS','SUCCESS','SUCCESS','FAILED','DLQ','CANCELLED'])[1 + n %% 6],
                   now() - interval '30 days', 1, 3, now() - interval '30 days',
                   now() - interval '30 days', now() - interval '30 days',
                   now() - interval '30 days', now() - interval '30 days'
            FROM generate_series(%s::bigint, %s::bigint) AS n
            """,
            (offset + 1, offset + count),
        )

    def _seed_due(self, count: int) -> list[int]:
        rows = self.pg.execute(
            """
            INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,
                not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc)
            SELECT 'due-' || n, 'T_NOOP', '{"n": 0}'::jsonb, 'PENDING',
                   now() - interval '1 second', 0, 3, now(), now()
            FROM generate_series(1, %s::int) AS n
            RETURNING id
            """,
            (count,),
        ).fetchall()
        return [row[0] for row in rows]

    def _reset_due(self, due_ids: list[int]) -> None:
        self.pg.execute(
            "UPDATE aol_actions SET status = 'PENDING', queued_at_utc = NULL, "
            "not_before_utc = now() - interval '1 second' WHERE id = ANY(%s)",
            (due_ids,),
        )
        self.redis.delete(AICMO_QUEUE)

    def _queued_actions(self) -> int:
        """The actions the messages in aicmo's queue carry (a batch message: many)."""
        total = 0
        for raw in self.redis.lrange(AICMO_QUEUE, 0, -1):
            args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
            total += len(args[0]) if isinstance(args[0], list) else 1
        return total

    def _one_sweep(self, sweeper: Sweeper, due_ids: list[int]) -> dict[str, float]:
        self._reset_due(due_ids)
        started = time.perf_counter()
        cpu = time.process_time()
        report = sweeper.sweep()
        elapsed = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu) * 1000
        if report.dispatched != len(due_ids) or report.errors:
            raise RuntimeError(f"sweep dispatched {report.dispatched}/{len(due_ids)}: {report}")
        queued = self._queued_actions()
        if queued != len(due_ids):
            raise RuntimeError(f"sweep published {queued}/{len(due_ids)} actions")
        # The same sweep with a dispatcher that only records: the database's share of it,
        # statement by statement (the profiles section shows where it grows with the table).
        self._reset_due(due_ids)
        recorder = RecordingDispatcher()
        with statement_times(get_engine()) as times:
            started = time.perf_counter()
            Sweeper(dispatcher=recorder).sweep()
            db_only = (time.perf_counter() - started) * 1000
        self.last_sweep_statements = times
        if len(recorder.sent) != len(due_ids):
            raise RuntimeError(f"recorded sweep sent {len(recorder.sent)}/{len(due_ids)}")
        # The sweep runs in this process: its CPU is this process's (PostgreSQL's is not in it).
        return {"ms": elapsed, "db_only_ms": db_only, "main_cpu_ms": cpu_ms}

    # -- 6. beat fan-out -------------------------------------------------------------------

    FANOUT_CANDIDATES = (
        ("aicmo.cam.schedule", ("schedule_ticks", "enqueue_due_ticks", "fan_out_ticks")),
        ("aicmo.cam.scheduling", ("schedule_ticks", "enqueue_due_ticks", "fan_out_ticks")),
        ("aicmo.cam.scheduler", ("schedule_ticks", "enqueue_due_ticks", "fan_out_ticks")),
        ("aicmo.cam.beat", ("schedule_ticks", "enqueue_due_ticks", "fan_out_ticks")),
        ("aicmo.cam.orchestrator", ("schedule_ticks", "enqueue_due_ticks", "fan_out_ticks")),
        ("aicmo.cam", ("schedule_ticks", "enqueue_due_ticks", "fan_out_ticks")),
    )

    @classmethod
    def find_fanout(cls) -> Callable[..., Any]:
        """The campaign fan-out (beat's ``cam.schedule_ticks``), wherever issue 4 puts it."""
        cam = ROOT / "aicmo" / "cam"
        if not any(cam.glob("*.py")):
            raise NotMeasured("aicmo/cam has no code yet (campaigns, issue 3, are being built)")
        for module_name, names in cls.FANOUT_CANDIDATES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for name in names:
                found = getattr(module, name, None)
                if callable(found):
                    return found
        raise NotMeasured(
            "no function that enqueues CAMPAIGN_TICK for due ACTIVE campaigns was found "
            f"(looked for {', '.join(sorted({n for _, ns in cls.FANOUT_CANDIDATES for n in ns}))} "
            "in aicmo.cam.*; beat fan-out is issue 4)"
        )

    def figure_fanout(self) -> None:
        """N ACTIVE campaigns due: one call of the fan-out until every tick is enqueued."""
        self.results.load_before["fanout"] = os.getloadavg()
        try:
            fan_out = self.find_fanout()
            for rep in range(self.reps):
                before = machine_before()
                metrics = self.run_fanout(fan_out)
                self.results.add("fanout", "aicmo", {**metrics, **before})
                self.progress("fanout", "aicmo", rep, metrics)
        except NotMeasured as exc:
            self.results.not_measured["fanout"] = str(exc)
        except Exception as exc:  # code of another issue, still in flux
            self.results.not_measured["fanout"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.results.load["fanout"] = os.getloadavg()

    def run_fanout(self, fan_out: Callable[..., Any]) -> dict[str, float]:
        from aicmo.orchestration.registry import registry

        self.reset()
        self.pg.execute("TRUNCATE cam_campaigns CASCADE")
        self._seed_campaigns(self.sizes.campaigns)
        self.pg.execute("VACUUM ANALYZE cam_campaigns")
        tick = registry.get("CAMPAIGN_TICK")
        params = list(inspect.signature(fan_out).parameters)
        started = time.perf_counter()
        cpu = time.process_time()
        if params and params[0] == "session":
            with session_scope() as session:  # its commit publishes the ticks
                fan_out(session)
        else:
            fan_out()
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
        row = self.pg.execute(
            "SELECT count(*) FROM aol_actions WHERE action_type = 'CAMPAIGN_TICK'"
        ).fetchone()
        ticks = int(row[0]) if row else 0
        published = int(self.redis.llen(tick.queue))
        if ticks != self.sizes.campaigns or published != ticks:
            raise NotMeasured(
                f"the fan-out made {ticks} tick rows and {published} messages for "
                f"{self.sizes.campaigns} campaigns"
            )
        return {"seconds": elapsed, "ticks": ticks, "main_cpu_ms": cpu_s * 1000 / max(1, ticks)}

    def _seed_campaigns(self, count: int) -> None:
        """``count`` ACTIVE campaigns ticking every 15 minutes (so a slot is always due): one
        made through the cam API, then copied row for row in SQL (fast, and it follows the
        table whatever columns it grows)."""
        try:
            campaigns = importlib.import_module("aicmo.cam.campaigns")
            models = importlib.import_module("aicmo.cam.models")
        except ImportError as exc:
            raise NotMeasured(f"aicmo.cam is not importable: {exc}") from None
        spec = {
            "name": "bench-1",
            "tick_every_minutes": 15,
            "steps": [{"subject": "Hello", "body": "Hello there", "wait_minutes": 60}],
        }
        with session_scope() as session:
            template = campaigns.create_campaign(session, spec)
            campaigns.activate(session, template.id)
            template_id = template.id
        table = models.Campaign.__table__
        columns = [c.name for c in table.columns if c.name not in ("id", "name")]
        listed = ", ".join(columns)
        copied = ", ".join(f"c.{name}" for name in columns)
        self.pg.execute(
            f"INSERT INTO cam_campaigns (name, {listed}) "
            f"SELECT 'bench-' || n, {copied} FROM cam_campaigns c, "
            "generate_series(2, %s::int) AS n WHERE c.id = %s",
            (count, template_id),
        )

    # -- 7. embedded default ---------------------------------------------------------------

    def figure_embedded(self) -> None:
        """The e2e figure on SQLite + kombu's filesystem transport, aicmo only."""
        self.measure("embedded", ["aicmo"], self.run_embedded)

    def run_embedded(
        self,
        kind: str,
        count: int | None = None,
        sampled: Callable[[Worker], AbstractContextManager[None]] | None = None,
    ) -> dict[str, float]:
        """One embedded run; ``sampled``: a profiler around the producing and draining."""
        count = count or self.sizes.embedded
        folder = self.env.tmp / f"embedded-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        database = folder / "aicmo.db"
        overrides = {
            "AICMO_DATABASE_URL": f"sqlite:///{database}",
            "AICMO_BROKER_URL": "filesystem://",
            "AICMO_BROKER_DIR": str(folder / "broker"),
            "AICMO_ARTIFACT_DIR": str(folder / "artifacts"),
        }
        env = BenchEnv.base_env({**self.env.aicmo_env(), **overrides})
        subprocess.run(
            [sys.executable, "-c", "from aicmo.migrate import upgrade; upgrade()"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        worker = self.env.worker("aicmo", [AICMO_QUEUE], log_level=self.log_level, env=overrides)
        try:
            worker.start()
            with sampled(worker) if sampled is not None else nullcontext():
                cpu_before = worker.cpu_seconds()
                producer = self.env.track(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.benchmarks.embedded_producer", str(count)],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                )
                out, err = producer.communicate(timeout=max(120, count / 10))
                if producer.returncode != 0:
                    raise RuntimeError(f"embedded producer failed:\n{err.decode()[-3000:]}")
                produced = json.loads(out.decode().strip().splitlines()[-1])
                state = wait_for(
                    lambda: self._embedded_done(database, count, worker),
                    max(60.0, count / 10),
                    interval=0.2,
                    message=f"embedded actions ({worker.log_path})",
                )
                cpu = per_action(cpu_before, worker.cpu_seconds(), count)
        finally:
            self.stop_worker(worker)
        assert isinstance(state, Done) and state.last_done is not None
        elapsed = state.last_done - float(produced["t_first"])
        return {
            "rate": count / elapsed,
            "enqueue_rate": count / (float(produced["t_enqueued"]) - float(produced["t_first"])),
            **cpu,
        }

    @staticmethod
    def _embedded_done(database: Path, count: int, worker: Worker) -> Done | None:
        if worker.proc is not None and worker.proc.poll() is not None:
            raise RuntimeError(f"embedded worker died:\n{worker.log()[-3000:]}")
        with sqlite3.connect(database, timeout=30) as conn:
            done, failed, last = conn.execute(
                "SELECT sum(status = 'SUCCESS'), sum(status IN ('FAILED', 'DLQ')), "
                "max(finished_at_utc) FROM aol_actions"
            ).fetchone()
        if failed:
            raise RuntimeError(f"embedded: {failed} action(s) failed ({worker.log_path})")
        if not done or done < count:
            return None
        finished = datetime.fromisoformat(last)
        if finished.tzinfo is None:
            from datetime import UTC

            finished = finished.replace(tzinfo=UTC)
        return Done(int(done), 0, None, finished.timestamp())
