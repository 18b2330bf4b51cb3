"""``--profile``: where a worker's time goes during the end-to-end figure.

py-spy attaches to the running worker (main process and its pool children) once it is ready,
samples it while N no-op actions are enqueued and run, and stops; its raw stacks are summed
into the functions with the most *self* time (the frame on top of the stack) and the most
*total* time (anywhere on the stack), separately for the main process (it receives messages,
acks, sends events: the wall, per DESIGN.md) and for the pool children (they run the task).
The plain worker is profiled the same way, for comparison.

If py-spy is missing or cannot attach (it needs ptrace), the fallback runs the executor loop
in this process under pyinstrument: ``tasks.actions.executor().run(id, "T_NOOP")`` for rows
enqueued beforehand. That shows the executor's own cost per action, without Celery's.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_figures import NOOP, Bench, per_action
from tests.support.processes import ROOT

RATE_HZ = 100
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass
class Profile:
    label: str
    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    total_counts: Counter[str] = field(default_factory=Counter)

    def add(self, frames: list[str], count: int) -> None:
        if not frames:
            return
        self.samples += count
        self.self_counts[frames[-1]] += count
        for name in set(frames):
            self.total_counts[name] += count

    def render(self, top: int, unit: str = "samples") -> str:
        if not self.samples:
            return f"## {self.label}\n\n(no samples)\n"
        lines = [f"## {self.label}: {self.samples:,} {unit}", "", "### top by self time", ""]
        lines.append(f"{'self %':>7} {'total %':>8}  function (file)")
        for name, count in self.self_counts.most_common(top):
            share, total = count / self.samples, self.total_counts[name] / self.samples
            lines.append(f"{share:7.1%} {total:8.1%}  {name}")
        lines += ["", "### top by total time (self + callees; the startup chain left out)", ""]
        lines.append(f"{'total %':>8} {'self %':>7}  function (file)")
        inclusive = [
            (name, count)
            for name, count in self.total_counts.most_common()
            if count < 0.9 * self.samples
        ]
        for name, count in inclusive[:top]:
            share, own = count / self.samples, self.self_counts[name] / self.samples
            lines.append(f"{share:8.1%} {own:7.1%}  {name}")
        return "\n".join(lines) + "\n"


def short_path(path: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3." and "/" in tail else tail
    root = str(ROOT) + "/"
    return path[len(root) :] if path.startswith(root) else path


def frame_name(raw: str) -> str:
    found = _FRAME.match(raw.strip())
    if not found:
        return raw.strip()
    return f"{found['func']} ({short_path(found['file'])})"


def raw_stacks(path: Path, main_pid: int) -> Iterator[tuple[bool, list[str], int]]:
    """py-spy's raw (collapsed) stacks: (in the main process?, frames outermost first, count)."""
    for line in path.read_text(errors="replace").splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        parts = found["stack"].split(";")
        pid = None
        # "process <main>;process <child>;frames": the last process frame owns the stack.
        while parts and (digits := re.match(r"process (\d+):", parts[0])):
            pid = int(digits.group(1))
            parts.pop(0)
        if parts and parts[0].startswith("thread "):
            parts.pop(0)
        yield pid == main_pid, parts, int(found["count"])


def parse_raw(path: Path, main_pid: int, kind: str) -> tuple[Profile, Profile]:
    """py-spy's raw stacks -> (main process, pool children) profiles."""
    main = Profile(f"{kind} worker, main process (pid {main_pid})")
    pool = Profile(f"{kind} worker, pool children")
    for in_main, parts, count in raw_stacks(path, main_pid):
        (main if in_main else pool).add([frame_name(p) for p in parts], count)
    return main, pool


def package_of(file: str) -> str:
    """The installed package, aicmo's own folder or the stdlib module a source file is in."""
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    root = str(ROOT) + "/"
    if file.startswith(root):
        head = file[len(root) :].split("/", 1)[0]
        return {"tasks": "aicmo (tasks/)", "tests": "the benchmark's handlers (tests/)"}.get(
            head, head.removesuffix(".py")
        )
    if "lib/python3." in file:
        parts = file.split("lib/python3.", 1)[1].split("/")
        return "stdlib " + (parts[1].removesuffix(".py") if len(parts) > 1 else "?")
    if file.startswith("<frozen"):
        return "stdlib importlib"
    return file or "?"


def self_by_package(path: Path, main_pid: int) -> tuple[Counter[str], Counter[str]]:
    """Samples by the package of the frame on top (self time): main process, pool children."""
    main: Counter[str] = Counter()
    pool: Counter[str] = Counter()
    for in_main, parts, count in raw_stacks(path, main_pid):
        if not parts:
            continue
        found = _FRAME.match(parts[-1].strip())
        (main if in_main else pool)[package_of(found["file"] if found else parts[-1])] += count
    return main, pool


def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def py_spy_record(
    env: Any, pid: int, raw: Path, *, rate: int = RATE_HZ, gil: bool = False
) -> Iterator[None]:
    """py-spy samples ``pid`` and its children (raw stacks into ``raw``) while the block
    runs. ``gil``: only stacks holding the GIL, close to CPU time (a wait on a socket
    releases it); without it a blocked read counts as busy."""
    spy = py_spy_path()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    raw.unlink(missing_ok=True)
    argv = [spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    argv += ["--rate", str(rate), "--format", "raw", "-o", str(raw), "--full-filenames"]
    argv += ["--gil"] if gil else []
    proc = env.track(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    time.sleep(1.5)  # py-spy finds the process and its children
    if proc.poll() is not None:
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        raise RuntimeError(f"py-spy exited with {proc.returncode}: {out[-2000:]}")
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out_bytes, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out_bytes, _ = proc.communicate()
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote nothing: {out_bytes.decode(errors='replace')[-2000:]}")


def sampled_e2e(
    bench: Bench, kind: str, count: int, raw: Path, *, rate: int = RATE_HZ, gil: bool = False
) -> tuple[int, float, dict[str, float]]:
    """``count`` no-op actions one by one through a fresh worker of ``kind`` while py-spy
    samples it into ``raw``: (the worker's main pid, actions/s, CPU ms per action)."""
    bench.reset()
    worker = bench.start_worker(kind)
    try:
        with py_spy_record(bench.env, worker.pid, raw, rate=rate, gil=gil):
            cpu_before = worker.cpu_seconds()
            started = time.time()
            for n in range(count):
                bench.enqueue_one(kind, n)
            state = bench.wait_done(kind, count, worker)
            assert state.last_done is not None
            cpu = per_action(cpu_before, worker.cpu_seconds(), count)
        return worker.pid, count / (state.last_done - started), cpu
    finally:
        bench.stop_worker(worker)


def profile_worker_py_spy(bench: Bench, kind: str, out_dir: Path, count: int) -> str:
    raw = out_dir / f"profile-{kind}.raw.txt"
    pid, rate, cpu = sampled_e2e(bench, kind, count, raw)
    main, pool = parse_raw(raw, pid, kind)
    sampled = [
        f"{role} {profile.samples / RATE_HZ / count * 1000:.2f} ms"
        for role, profile in (("main process", main), ("pool children", pool))
    ]
    header = (
        f"# {kind} worker under py-spy ({RATE_HZ} Hz, non-blocking, idle excluded): {count:,} "
        f"no-op actions end to end at {rate:,.0f}/s while sampled\n"
        f"# CPU per action (psutil): main process {cpu['main_cpu_ms']:.2f} ms, pool children "
        f"{cpu['pool_cpu_ms']:.2f} ms\n"
        f"# sampled non-idle time per action: {', '.join(sampled)} (more than the CPU: py-spy "
        "counts a wait on a socket as busy)\n"
        f"# raw stacks: {raw}\n"
    )
    return header + "\n" + main.render(25) + "\n" + pool.render(25)


def profile_executor_pyinstrument(bench: Bench, count: int) -> str:
    """The executor loop in this process: claim, handler, SUCCESS, for pre-enqueued rows."""
    from pyinstrument import Profiler

    from aicmo.db import session_scope
    from aicmo.orchestration.dispatch import get_dispatcher, install_dispatcher
    from aicmo.orchestration.queue import ActionQueue
    from tasks.actions import executor
    from tests.support.recording import RecordingDispatcher

    bench.reset()
    previous = get_dispatcher()
    install_dispatcher(RecordingDispatcher())  # rows only: no worker may take them
    try:
        with session_scope() as session:
            done = ActionQueue.enqueue_many(session, [(NOOP, {"n": n}) for n in range(count)])
    finally:
        install_dispatcher(previous)
    ids = [item.action_id for item in done]
    run = executor()
    for action_id in ids[:20]:  # warm: connections, statement caches
        run.run(action_id, NOOP)
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    profiler.start()
    for action_id in ids[20:]:
        run.run(action_id, NOOP)
    session_ = profiler.stop()
    elapsed = time.perf_counter() - started
    profile = Profile("executor.run in-process (pyinstrument)")
    _walk(session_.root_frame(), [], profile)
    per = elapsed / max(1, len(ids) - 20) * 1000
    header = (
        f"# executor().run(id, 'T_NOOP') in one process under pyinstrument: "
        f"{len(ids) - 20:,} actions, {per:.2f} ms each ({1000 / per:,.0f}/s per process; "
        "Celery's own work is not included)\n"
        "# units below: 0.1 ms of wall-clock time (waits on PostgreSQL included)\n"
    )
    return header + "\n" + profile.render(25, unit="x 0.1 ms")


def _walk(frame: Any, stack: list[str], profile: Profile) -> None:
    if frame is None:
        return
    name = f"{frame.function} ({short_path(frame.file_path or '?')})"
    here = [*stack, name]
    self_time = round(frame.total_self_time * 10_000)
    if self_time:
        profile.add(here, self_time)
    for child in frame.children:
        if not child.is_synthetic:  # "[self]" frames: already in total_self_time above
            _walk(child, here, profile)


def run_profile(bench: Bench, out_dir: Path, count: int, profiler: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    if profiler == "py-spy":
        try:
            for kind in ("aicmo", "plain"):
                print(f"  [profile] {kind} worker under py-spy ...", flush=True)
                sections.append(profile_worker_py_spy(bench, kind, out_dir, count))
        except Exception as exc:  # ptrace refused, py-spy missing: fall back
            print(f"  [profile] py-spy failed ({exc}); falling back to pyinstrument", flush=True)
            sections.append(f"# py-spy failed: {exc}\n")
            profiler = "pyinstrument"
    if profiler == "pyinstrument":
        print("  [profile] executor loop in-process under pyinstrument ...", flush=True)
        sections.append(profile_executor_pyinstrument(bench, count))
    path = out_dir / "profile.txt"
    path.write_text("\n\n".join(sections))
    return path
