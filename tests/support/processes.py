"""Real Celery processes (worker, beat, flower) started by tests, in their own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class CeleryProcess:
    """``celery -A tasks <command>`` with the test environment; logs go to a file."""

    def __init__(
        self,
        command: str,
        args: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        ready_marker: str | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.command = command
        # Run under another program, e.g. ``faketime -f -5m`` for a host whose clock is off.
        self.prefix = list(prefix)
        self.args = list(args)
        self.name = f"{command}-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.name}.log"
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [self.env.get("PYTHONPATH")])]
        )
        self.ready_marker = ready_marker
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> CeleryProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "celery", "-A", "tasks", self.command, *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes the pool with it
        )
        log_file.close()
        if self.ready_marker:
            wait_for(self._ready, timeout, message=f"{self.command} to be ready ({self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.command} exited with {self.proc.returncode}:\n{self.log()}")
        return self.ready_marker is not None and self.ready_marker in self.log()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the main process and every child at once: a host dying."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass
        # Reap any pool child that outlived its parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def worker(
    log_dir: Path,
    concurrency: int = 2,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> CeleryProcess:
    name = f"w{uuid.uuid4().hex[:8]}@%h"
    return CeleryProcess(
        "worker",
        [
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-n",
            name,
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            *extra,
        ],
        log_dir,
        env=env,
        ready_marker=" ready.",
        prefix=prefix,
    )


def beat(
    log_dir: Path, env: dict[str, str] | None = None, extra: Sequence[str] = ()
) -> CeleryProcess:
    schedule = log_dir / f"beat-{uuid.uuid4().hex[:8]}.db"
    return CeleryProcess(
        "beat",
        ["-l", "INFO", "-s", str(schedule), "--pidfile=", *extra],
        log_dir,
        env=env,
        ready_marker="beat: Starting",
    )
