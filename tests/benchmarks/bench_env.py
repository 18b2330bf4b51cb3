"""The benchmark run's own services and processes, and their cleanup.

A run creates PostgreSQL database ``aicmo_bench_<pid>``, claims a Redis database number the
way the test suite does (so it never shares queues with a concurrent ``make test``), and
starts every worker in a process group of its own. :meth:`BenchEnv.close` stops every process
and drops the database; it runs on normal exit, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import redis

from tests.support import services
from tests.support.processes import ROOT, wait_for

# The harness's own knobs (AICMO_TEST_PG_ADMIN, AICMO_TEST_REDIS), not aicmo settings.
HARNESS_PREFIX = "AICMO_TEST_"
# The run sets these itself: its own database, Redis database, folder and action types.
RUN_OWNED = frozenset(
    {
        "AICMO_DATABASE_URL",
        "AICMO_BROKER_URL",
        "AICMO_BROKER_DIR",
        "AICMO_ARTIFACT_DIR",
        "AICMO_ACTION_MODULES",
        "AICMO_PROOF_MODE",
    }
)
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "URL", "DSN")
ACTION_MODULES = "aicmo.orchestration.adapters,tests.support.actions,tests.benchmarks.bench_actions"
PLAIN_APP = "tests.benchmarks.plain_app"
AICMO_APP = "tasks"


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@dataclass
class Worker:
    """``celery -A <app> worker`` (prefork), or another framework's worker (``argv``)."""

    app: str
    env: dict[str, str]
    log_dir: Path
    queues: Sequence[str]
    concurrency: int = 2
    log_level: str = "INFO"
    label: str = "worker"
    name: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen[bytes] | None = None
    # Another framework's worker (Dramatiq, Procrastinate): its command line, and the log line
    # it prints once ready, seen ``ready_count`` times (once per worker process).
    argv: Sequence[str] | None = None
    ready_marker: str = " ready."
    ready_count: int = 1

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.label}-{self.name}.log"

    @property
    def nodename(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def command(self) -> list[str]:
        if self.argv is not None:
            return list(self.argv)
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-P",
            "prefork",
            "-c",
            str(self.concurrency),
            "-n",
            f"{self.name}@%h",
            "-l",
            self.log_level,
            "--without-mingle",
            "--without-gossip",
            "-Q",
            ",".join(self.queues),
        ]

    def start(self, timeout: float = 90.0) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() takes the pool too
            )
        wait_for(self._ready, timeout, interval=0.05, message=f"{self.label} ({self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.label} exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            )
        return self.log().count(self.ready_marker) >= self.ready_count

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        """The worker's main process and its pool children."""
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> dict[str, float]:
        """RSS in MiB: main, the pool children summed, and the total; plus USS total (the
        pages only these processes hold: forked children share much of their parent)."""
        out = {"main_rss": 0.0, "children_rss": 0.0, "rss": 0.0, "uss": 0.0}
        for index, process in enumerate(self.processes()):
            try:
                full = process.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss = full.rss / 2**20
            out["main_rss" if index == 0 else "children_rss"] += rss
            out["rss"] += rss
            out["uss"] += getattr(full, "uss", 0) / 2**20
        return out

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time (user + system) used so far by the main process and by its children."""
        main_cpu = children_cpu = 0.0
        for index, process in enumerate(self.processes()):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            used = times.user + times.system
            if index == 0:
                main_cpu += used
            else:
                children_cpu += used
        return main_cpu, children_cpu

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # Whatever outlived the warm shutdown (a pool child, the profiler's target) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def shell_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``AICMO_*`` settings of ``environ`` that a run passes on to every worker."""
    return {
        key: value
        for key, value in environ.items()
        if key.startswith("AICMO_") and not key.startswith(HARNESS_PREFIX) and key not in RUN_OWNED
    }


class BenchEnv:
    """Database, Redis database number, temp folder and processes of one benchmark run."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.owner = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.database_name = f"aicmo_bench_{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix="aicmo-bench-"))
        self.log_dir = self.tmp / "logs"
        self.keep_logs = keep_logs
        self.redis_db: int | None = None
        self.database_created = False
        self.workers: list[Worker] = []
        self.subprocesses: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._old_handlers: dict[int, Any] = {}
        self._plain_configs: dict[bool | None, tuple[str, str]] = {}
        # Read now: install_process_env() replaces this process's AICMO_* variables.
        self.shell_settings = shell_settings(os.environ)

    # -- set up ----------------------------------------------------------------------------

    def open(self) -> BenchEnv:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[signum] = signal.signal(signum, _terminate)
        self.redis_db = services.claim_redis_db(self.owner)
        self.found = services.TestServices(self.database_name, self.redis_db)
        self.redis = redis.Redis.from_url(self.broker_url)
        self.redis.flushdb()
        services.create_database(self.database_name)
        self.database_created = True
        return self

    def __enter__(self) -> BenchEnv:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def database_url(self) -> str:
        return self.found.database_url

    @property
    def psycopg_dsn(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://")

    @property
    def broker_url(self) -> str:
        return self.found.broker_url

    def aicmo_env(self) -> dict[str, str]:
        """aicmo's settings for this run: the shell's ``AICMO_*`` settings (``AICMO_TASK_EVENTS``,
        log level...), reaching both sides' workers and this process alike, with the run's own
        services and action modules on top."""
        return {
            "AICMO_LOG_LEVEL": "INFO",
            "AICMO_LOG_FORMAT": "text",
            **self.shell_settings,
            "AICMO_DATABASE_URL": self.database_url,
            "AICMO_BROKER_URL": self.broker_url,
            "AICMO_ARTIFACT_DIR": str(self.tmp / "artifacts"),
            "AICMO_ACTION_MODULES": ACTION_MODULES,
            "AICMO_PROOF_MODE": "true",
        }

    def plain_env(self, events: bool | None = None) -> dict[str, str]:
        """The plain app's environment: aicmo's Celery settings (``events=False``: with
        Celery's default event settings instead). Call after :meth:`install_process_env`."""
        if events not in self._plain_configs:
            from tests.benchmarks.bench_settings import plain_config, plain_task_options

            self._plain_configs[events] = (
                json.dumps(plain_config(self.broker_url, events)),
                json.dumps(plain_task_options()),
            )
        config, options = self._plain_configs[events]
        return {
            **self.services_env(),
            "BENCH_PLAIN_CONFIG": config,
            "BENCH_PLAIN_TASK_OPTIONS": options,
            "BENCH_PLAIN_EVENTS": {None: "aicmo", True: "on", False: "off"}[events],
        }

    def services_env(self) -> dict[str, str]:
        """What the baselines' jobs need (:mod:`tests.benchmarks.bench_effects`)."""
        return {"BENCH_PLAIN_BROKER": self.broker_url, "BENCH_PLAIN_DSN": self.psycopg_dsn}

    @staticmethod
    def base_env(extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AICMO_", "BENCH_"))}
        env.update(extra)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        return env

    def install_process_env(self) -> None:
        """Point this process's aicmo at the run's services (before aicmo is imported)."""
        for key in [k for k in os.environ if k.startswith(("AICMO_", "BENCH_"))]:
            if not key.startswith(HARNESS_PREFIX):
                del os.environ[key]
        os.environ.update(self.aicmo_env())
        os.environ.update(self.plain_env())

    def shell_settings_shown(self) -> dict[str, str]:
        """The shell's ``AICMO_*`` settings, secrets masked, for the report."""
        return {
            key: "***" if any(word in key for word in SECRET_WORDS) else value
            for key, value in sorted(self.shell_settings.items())
        }

    # -- processes -------------------------------------------------------------------------

    def worker(
        self,
        kind: str,
        queues: Sequence[str],
        log_level: str = "INFO",
        env: dict[str, str] | None = None,
    ) -> Worker:
        """An unstarted worker of ``kind``: aicmo, plain (aicmo's settings) or plain-noevents
        (Celery's default event settings)."""
        if kind == "aicmo":
            app, extra = AICMO_APP, self.aicmo_env()
        else:
            app, extra = (
                PLAIN_APP,
                self.plain_env(events=False if kind == "plain-noevents" else None),
            )
        made = Worker(
            app=app,
            env=self.base_env({**extra, **(env or {})}),
            log_dir=self.log_dir,
            queues=queues,
            log_level=log_level,
            label=kind,
        )
        self.workers.append(made)
        return made

    def other_worker(
        self, label: str, argv: Sequence[str], ready_marker: str, ready_count: int = 1
    ) -> Worker:
        """An unstarted worker of another framework, with the baselines' environment."""
        made = Worker(
            app="",
            env=self.base_env(self.services_env()),
            log_dir=self.log_dir,
            queues=(),
            label=label,
            argv=argv,
            ready_marker=ready_marker,
            ready_count=ready_count,
        )
        self.workers.append(made)
        return made

    def track(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.subprocesses.append(proc)
        return proc

    def stop_workers(self) -> None:
        for found in self.workers:
            found.stop()
        self.workers.clear()

    # -- tear down -------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Ctrl-C again while cleaning up must not leave a database behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_workers()
            for proc in self.subprocesses:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            try:
                from aicmo.db import dispose_engines

                dispose_engines()
            except Exception:  # best effort: the DROP below forces it anyway
                pass
            if self.database_created:
                services.drop_database(self.database_name)
            if self.redis_db is not None:
                with contextlib.suppress(redis.RedisError):
                    self.redis.flushdb()
                services.release_redis_db(self.redis_db, self.owner)
            if not self.keep_logs:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
