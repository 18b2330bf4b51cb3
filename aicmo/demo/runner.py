"""``aicmo demo``: the whole flow on the embedded default (SQLite + file transport).

It runs in a folder of its own (``var/demo`` by default, wiped first), so it never touches
the database or broker an operator configured:

1. makes the SQLite schema through the Alembic migrations;
2. starts a real ``celery worker`` and ``celery beat`` as child processes;
3. runs the work: the campaign flow from ``aicmo.cam`` when it is installed (campaign, leads,
   ticks, review, publishing in proof mode), otherwise a launch of posts and emails, some
   scheduled a few seconds ahead so beat's sweeper has to release them;
4. shows one action failing into the dead-letter queue (a CRM inbox that is missing), fixes
   the cause, replays it and watches it succeed;
5. prints a summary: actions by type and status, artifacts written, time taken, and where
   everything is.

The worker and beat are stopped on exit, on an error, on Ctrl-C and on SIGTERM; on Linux
they also receive SIGTERM if the demo process itself is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

MARKER = ".aicmo-demo"
LAUNCH_POSTS = [
    ("linkedin", "We just launched aicmo: every side effect is an action you can replay."),
    ("x", "aicmo is live. Campaign actions with retries, dead letters and replay."),
    ("mastodon", "Launch day for aicmo, the action orchestration layer on Celery."),
]
SCHEDULED_POSTS = [
    ("linkedin", "Follow-up: how aicmo keeps exactly one success per action."),
    ("x", "Follow-up: the sweeper releases scheduled actions when they are due."),
]
LAUNCH_LEADS = [
    ("ada@example.com", "Ada"),
    ("grace@example.com", "Grace"),
    ("alan@example.com", "Alan"),
    ("edsger@example.com", "Edsger"),
]


class DemoError(RuntimeError):
    """The demo could not finish; the message says why and where the logs are."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, both ending the demo through its clean-up path."""


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "aicmo.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def crm_inbox(self) -> Path:
        return self.root / "crm-inbox"

    @property
    def beat_schedule(self) -> Path:
        return self.root / "celerybeat-schedule"


def prepare_folder(root: Path) -> DemoPaths:
    """A fresh demo folder; refuses to wipe a folder the demo did not make."""
    root = root.expanduser().resolve()
    if root.exists():
        if not root.is_dir():
            raise DemoError(f"{root} is a file; choose another --dir")
        if any(root.iterdir()) and not (root / MARKER).exists():
            raise DemoError(
                f"{root} is not empty and was not made by `aicmo demo`; choose another --dir"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by `aicmo demo`; wiped by the next run\n")
    paths = DemoPaths(root)
    paths.logs.mkdir()
    return paths


def demo_environment(paths: DemoPaths) -> dict[str, str]:
    """The embedded default in the demo's folder, tuned to finish in seconds."""
    return {
        "AICMO_DATABASE_URL": paths.database_url,
        "AICMO_BROKER_URL": "filesystem://",
        "AICMO_BROKER_DIR": str(paths.broker),
        "AICMO_ARTIFACT_DIR": str(paths.artifacts),
        "AICMO_PROOF_MODE": "true",
        "AICMO_CELERY_APP": "tasks",
        "AICMO_ACTION_MODULES": "aicmo.orchestration.adapters,aicmo.demo.actions",
        # Beat sweeps twice a second; actions due more than 2 s ahead wait in the database.
        "AICMO_SWEEP_INTERVAL_SECONDS": "0.5",
        "AICMO_DISPATCH_HORIZON_SECONDS": "2",
        "AICMO_RESEND_GRACE_SECONDS": "5",
        "AICMO_HEALTH_MAX_SWEEP_AGE_SECONDS": "10",
        # The demo's sequence reaches each lead twice within seconds (its steps' waits are
        # compressed): the default per-person caps (1/24h, 3/7d) would hold the second step
        # for a day, so they are off here, as in the test suite.
        "AICMO_CAM_FREQUENCY_CAPS": "",
    }


# -- child processes -----------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the demo process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _python_path() -> str:
    """Make ``tasks`` and ``beat_schedule`` importable in the children from any folder."""
    import importlib.util

    spec = importlib.util.find_spec("tasks")
    parts = []
    if spec is not None and spec.origin:
        parts.append(str(Path(spec.origin).resolve().parent.parent))
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


class Child:
    """``celery -A tasks <command>``: its own process group, output to a log file."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log: Path, ready: str
    ) -> None:
        self.name, self.args, self.env, self.log, self.ready = name, args, env, log, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> Child:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.env["AICMO_CELERY_APP"], *self.args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops us cleanly
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def is_ready(self) -> bool:
        if not self.alive():
            raise DemoError(
                f"celery {self.name} exited with code "
                f"{self.proc.returncode if self.proc else '?'}:\n{self.tail()}"
            )
        return self.ready in self.text()

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask for a warm shutdown (running tasks finish)."""
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic), then kill whatever is left of the group."""
        if self.proc is None:
            return
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # A pool child that outlived its parent, or a parent that would not stop.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def stop_all(children: list[Child], timeout: float = 15.0) -> None:
    """Stop every child at once (a worker on the file transport takes a few seconds)."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.reap(deadline)


# -- progress ------------------------------------------------------------------------------


@dataclass
class Demo:
    paths: DemoPaths
    console: Console
    timeout: float
    started: float = field(default_factory=time.monotonic)
    children: list[Child] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    _last_counts: str = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        _Signals.check()
        self.console.print(f"[dim]{self.elapsed:5.1f}s[/] {text}", soft_wrap=True)
        self.console.file.flush()  # progress shows at once, also through a pipe

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        began = time.monotonic()
        self.say(f"[bold]▸ {title}[/]")
        yield
        self.say(f"[green]✓[/] {title} [dim]({time.monotonic() - began:.1f}s)[/]")

    def counts(self) -> Counter[str]:
        from sqlalchemy import func, select

        from aicmo.db import session_scope
        from aicmo.orchestration.models import AOLAction

        with session_scope() as session:
            rows = session.execute(
                select(AOLAction.status, func.count()).group_by(AOLAction.status)
            ).all()
        return Counter({status: int(n) for status, n in rows})

    def show_counts(self) -> None:
        counts = self.counts()
        order = ["PENDING", "READY", "RUNNING", "RETRY", "SUCCESS", "FAILED", "DLQ", "CANCELLED"]
        line = "  ".join(f"{s} {counts[s]}" for s in order if counts[s])
        if line and line != self._last_counts:
            self._last_counts = line
            self.say(f"  [dim]actions:[/] {line}")

    def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float | None = None
    ) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self.show_counts()
            if predicate():
                self.show_counts()
                return
            for child in self.children:
                if not child.alive():
                    raise DemoError(f"celery {child.name} died:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"timed out waiting for {what}; see the logs in {self.paths.logs}")
            time.sleep(0.15)
            _Signals.check()


def _statuses(ids: list[int]) -> dict[int, str]:
    from sqlalchemy import select

    from aicmo.db import session_scope
    from aicmo.orchestration.models import AOLAction

    with session_scope() as session:
        return dict(
            session.execute(select(AOLAction.id, AOLAction.status).where(AOLAction.id.in_(ids)))
            .tuples()
            .all()
        )


def all_in(ids: list[int], wanted: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        found = _statuses(ids)
        return len(found) == len(ids) and all(s in wanted for s in found.values())

    return check


# -- the flow ------------------------------------------------------------------------------


def start_processes(demo: Demo, env: dict[str, str]) -> None:
    host = socket.gethostname()
    worker = Child(
        "worker",
        [
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-n",
            f"demo-{os.getpid()}@{host}",
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        env,
        demo.paths.logs / "worker.log",
        " ready.",
    )
    beat = Child(
        "beat",
        ["beat", "-l", "INFO", "-s", str(demo.paths.beat_schedule), "--pidfile="],
        env,
        demo.paths.logs / "beat.log",
        "beat: Starting",
    )
    # Both start before anything else runs a thread (preexec_fn is not thread-safe).
    for child in (worker, beat):
        demo.children.append(child.start(demo.paths.root))
    demo.say(f"  worker pid {worker.pid}, beat pid {beat.pid} (logs in {demo.paths.logs})")
    deadline = time.monotonic() + 60
    while not all(child.is_ready() for child in demo.children):
        if time.monotonic() > deadline:
            raise DemoError(f"the worker or beat did not start in 60 s; see {demo.paths.logs}")
        time.sleep(0.1)


def enqueue_launch(demo: Demo, with_emails: bool) -> list[int]:
    """A product launch as a campaign would enqueue it: posts now and two scheduled ahead
    (PENDING in the database until beat's sweeper releases them), and, without aicmo.cam,
    welcome emails too."""
    from aicmo.db import session_scope, utcnow
    from aicmo.orchestration.queue import ActionQueue

    ids: list[int] = []
    with session_scope() as session:  # one transaction: all or nothing, sent after commit
        for platform, text in LAUNCH_POSTS:
            ids.append(
                ActionQueue.enqueue_action(
                    session,
                    "POST_SOCIAL",
                    {"social_platform": platform, "content": text},
                    idempotency_key=f"demo:launch:{platform}",
                ).id
            )
        for email, name in LAUNCH_LEADS if with_emails else []:
            ids.append(
                ActionQueue.enqueue_action(
                    session,
                    "SEND_EMAIL",
                    {
                        "to": email,
                        "subject": f"{name}, meet aicmo",
                        "body": f"Hello {name},\n\naicmo launched today.\n",
                    },
                    idempotency_key=f"demo:welcome:{email}",
                ).id
            )
        later = utcnow() + timedelta(seconds=4)
        for platform, text in SCHEDULED_POSTS:
            ids.append(
                ActionQueue.enqueue_action(
                    session,
                    "POST_SOCIAL",
                    {"social_platform": platform, "content": text},
                    idempotency_key=f"demo:follow-up:{platform}",
                    not_before=later,
                ).id
            )
    emails = f" and {len(LAUNCH_LEADS)} emails" if with_emails else ""
    demo.say(
        f"  enqueued {len(LAUNCH_POSTS)} posts{emails} now, {len(SCHEDULED_POSTS)} posts due "
        "in 4 s (PENDING in the database: beat's sweeper releases them when due)"
    )
    return ids


def dead_letter_flow(demo: Demo, report: dict[str, Any]) -> int:
    """An action fails until its cause is fixed: DLQ, fix, replay, SUCCESS."""
    from aicmo.db import session_scope
    from aicmo.demo.actions import DEMO_EXPORT
    from aicmo.orchestration import manager
    from aicmo.orchestration.manager import get_action
    from aicmo.orchestration.queue import ActionQueue

    with session_scope() as session:
        action_id = ActionQueue.enqueue_action(
            session,
            DEMO_EXPORT,
            {"inbox": str(demo.paths.crm_inbox), "report": report},
            idempotency_key="demo:crm-export",
        ).id
    demo.say(f"  action {action_id} {DEMO_EXPORT}: deliver the report to {demo.paths.crm_inbox}")
    demo.wait_for(all_in([action_id], {"DLQ"}), f"action {action_id} to reach the DLQ")
    with session_scope() as session:
        action = get_action(session, action_id)
        events = [entry.event for entry in action.logs]
        demo.say(
            f"  [red]action {action_id} is DLQ[/] after {action.attempts} attempts: "
            f"{escape(action.last_error or '')}"
        )
    demo.say(f"  [dim]execution log:[/] {' → '.join(events)}")
    demo.paths.crm_inbox.mkdir()
    demo.say(f"  fixed the cause: created {demo.paths.crm_inbox}")
    with session_scope() as session:
        manager.replay(session, action_id, by="aicmo demo")
    demo.say(f"  replayed action {action_id} (what `aicmo actions replay {action_id}` does)")
    demo.wait_for(all_in([action_id], {"SUCCESS"}), f"action {action_id} to succeed")
    demo.say(f"  [green]action {action_id} is SUCCESS[/] on its replay")
    demo.notes["dead_lettered_then_replayed"] = {
        "action_id": action_id,
        "action_type": DEMO_EXPORT,
        "error": action.last_error,
    }
    return action_id


def wait_until_idle(demo: Demo) -> None:
    waiting = {"PENDING", "READY", "RUNNING", "RETRY"}

    def idle() -> bool:
        counts = demo.counts()
        return not any(counts[s] for s in waiting)

    demo.wait_for(idle, "every action to finish")


# -- summary -------------------------------------------------------------------------------


def artifact_counts(root: Path) -> dict[str, tuple[int, int]]:
    """Files and bytes per artifact folder."""
    found: dict[str, tuple[int, int]] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            folder = str(path.parent.relative_to(root)) or "."
            files, size = found.get(folder, (0, 0))
            found[folder] = (files + 1, size + path.stat().st_size)
    return found


def summary(demo: Demo) -> dict[str, Any]:
    from sqlalchemy import func, select

    from aicmo.db import session_scope
    from aicmo.orchestration.models import AOLAction

    with session_scope() as session:
        rows = session.execute(
            select(AOLAction.action_type, AOLAction.status, func.count())
            .group_by(AOLAction.action_type, AOLAction.status)
            .order_by(AOLAction.action_type)
        ).all()
    by_type: dict[str, Counter[str]] = {}
    for action_type, status, n in rows:
        by_type.setdefault(action_type, Counter())[status] = int(n)
    statuses = sorted({s for c in by_type.values() for s in c})
    table = Table("action type", *statuses, "total", title="actions by type and status")
    for action_type, counts in by_type.items():
        table.add_row(action_type, *[str(counts[s]) for s in statuses], str(sum(counts.values())))
    artifacts = artifact_counts(demo.paths.artifacts)
    files = Table("artifact folder", "files", "bytes", title="artifacts written (proof mode)")
    for folder, (count, size) in artifacts.items():
        files.add_row(folder, str(count), str(size))
    out = demo.console
    out.print()
    out.print(table)
    out.print(files)
    took = demo.elapsed
    cam = demo.notes.get("campaign")
    if cam:
        out.print(
            f"campaign {cam['campaign_id']}: {cam['leads']} leads, {cam['ticks']} ticks, "
            f"{cam['published']} emails published after approval, {cam['rejected']} rejected",
            soft_wrap=True,
        )
    replayed = demo.notes.get("dead_lettered_then_replayed")
    if replayed:
        out.print(
            f"dead letter: action {replayed['action_id']} {replayed['action_type']} failed into "
            "the DLQ, its cause was fixed, and its replay succeeded",
            soft_wrap=True,
        )
    out.print(f"[bold green]demo finished in {took:.1f}s[/]")
    out.print(f"  artifacts:  {demo.paths.artifacts}")
    out.print(f"  CRM inbox:  {demo.paths.crm_inbox}")
    out.print(f"  database:   {demo.paths.database}")
    out.print(f"  logs:       {demo.paths.logs}")
    out.print("  look around with the same settings, e.g.:")
    out.print(f"    AICMO_DATABASE_URL={demo.paths.database_url} aicmo actions ls", soft_wrap=True)
    out.print(f"    AICMO_DATABASE_URL={demo.paths.database_url} aicmo stats", soft_wrap=True)
    return {
        "actions": {t: dict(c) for t, c in by_type.items()},
        "artifacts": {k: {"files": v[0], "bytes": v[1]} for k, v in artifacts.items()},
        "seconds": round(took, 2),
        **demo.notes,
    }


# -- entry point ---------------------------------------------------------------------------


class _Signals:
    """The signal that asked the demo to stop, kept until the demo has stopped.

    Raising from a signal handler is not enough: Python drops an exception raised while C
    code runs a callback ("Exception ignored in ..."), and the demo would carry on as if
    nothing happened. Every line the demo prints and every wait polls this instead."""

    received: int | None = None

    @classmethod
    def check(cls) -> None:
        if cls.received is not None:
            raise Interrupted()


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM both end the demo through its clean-up path, even when
    the shell started it with SIGINT ignored (a background job)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        first = _Signals.received is None
        _Signals.received = signum
        if first:
            raise Interrupted()

    previous_term = signal.signal(signal.SIGTERM, on_signal)
    previous_int = signal.signal(signal.SIGINT, on_signal)
    _Signals.received = None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        _Signals.received = None


def _configure(paths: DemoPaths) -> dict[str, str]:
    if "tasks" in sys.modules:
        raise DemoError(
            "the Celery app is already loaded in this process with other settings; "
            "run `aicmo demo` in a process of its own"
        )
    env = demo_environment(paths)
    os.environ.update(env)
    from aicmo.config import reload_settings
    from aicmo.db import dispose_engines

    reload_settings()
    dispose_engines()
    import aicmo.demo.actions  # noqa: F401 - registers DEMO_CRM_EXPORT in this process

    child_env = {**os.environ, "PYTHONPATH": _python_path()}
    return child_env


def run_demo(
    directory: Path, timeout: float = 120.0, console: Console | None = None
) -> dict[str, Any]:
    import logging

    out = console or Console(highlight=False)
    paths = prepare_folder(directory)
    env = _configure(paths)
    # The demo narrates; the library's own INFO lines would only interleave with it.
    logging.getLogger("aicmo").setLevel(logging.ERROR)
    demo = Demo(paths=paths, console=out, timeout=timeout)
    out.print(f"[bold]aicmo demo[/] in {paths.root} (SQLite + file transport, proof mode)")
    try:
        with _interruptible():
            with demo.step("schema through Alembic"):
                from aicmo.migrate import upgrade

                upgrade(paths.database_url)
                demo.say(f"  {paths.database}")
            with demo.step("start a Celery worker and beat"):
                start_processes(demo, env)
            from aicmo.demo import campaign

            flow = campaign.load()
            with demo.step("launch: social posts, two of them scheduled ahead"):
                launch = enqueue_launch(demo, with_emails=isinstance(flow, str))
            if isinstance(flow, str):
                demo.say(f"  [yellow]campaign flow not available[/]: {escape(flow)}")
                report: dict[str, Any] = {"campaign": None}
            else:
                with demo.step(flow.title):
                    report = {"campaign": flow.run(demo)}
                demo.notes["campaign"] = report["campaign"]
            with demo.step("launch: wait for the scheduled posts"):
                demo.wait_for(all_in(launch, {"SUCCESS"}), "the launch actions to succeed")
            report["launch_actions"] = len(launch)
            with demo.step("a failing action: retries, dead letter, fix, replay"):
                dead_letter_flow(demo, report)
            with demo.step("wait for every action to finish"):
                wait_until_idle(demo)
            with demo.step("stop the worker and beat"):
                stop_all(demo.children)
            result = summary(demo)
            _Signals.check()
            return result
    finally:
        # Ctrl-C, SIGTERM or an error: nothing of ours is left running.
        if any(child.alive() for child in demo.children):
            out.print("[dim]stopping the worker and beat…[/]")
        stop_all(demo.children)
