"""A producer process for the fault scenarios: enqueues ``--count`` actions in small batches
through aicmo's own enqueue, with whatever database and broker its environment names, and
keeps going through an outage (a failed batch is enqueued again: the keys make it idempotent).

    python -m tests.support.load_producer --tag fo --count 1200 --progress /tmp/p

It writes how many actions are committed so far to ``--progress`` after every batch, and
exits 0 once all are in.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.support.processes import CeleryProcess, wait_for

log = logging.getLogger("load_producer")
ROOT = Path(__file__).resolve().parents[2]


class Producer:
    """This module run as a process with ``env`` on top of the test environment."""

    def __init__(self, log_dir: Path, tag: str, count: int, env: Mapping[str, str], **opts: object):
        self.tag = tag
        self.count = count
        self.progress = log_dir / f"producer-{tag}.progress"
        self.log_path = log_dir / f"producer-{tag}.log"
        args = [sys.executable, "-m", "tests.support.load_producer", "--tag", tag]
        args += ["--count", str(count), "--progress", str(self.progress)]
        for key, value in opts.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.started = time.monotonic()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )

    def enqueued(self) -> int:
        try:
            return int(self.progress.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return 0

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def wait(self, timeout: float = 60.0) -> None:
        code = self.proc.wait(timeout=timeout)
        assert code == 0, f"the producer exited with {code}:\n{self.log_path.read_text()[-3000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_together(processes: list[CeleryProcess], timeout: float = 90.0) -> None:
    """Start every process at once, then wait for each to be ready: on two busy cores,
    one after another costs several seconds each."""
    markers = [p.ready_marker for p in processes]
    for process in processes:
        process.ready_marker = None
        process.start()
    for process, marker in zip(processes, markers, strict=True):
        process.ready_marker = marker
        wait_for(process._ready, timeout, message=f"{process.name} to be ready")


def start_under_load(
    book: Any,
    log_dir: Path,
    database_url: str,
    tag: str,
    count: int,
    env: Mapping[str, str],
    processes: list[CeleryProcess],
) -> Producer:
    """Two workers (beat's queue too, so its sweeps run on them) and beat with ``env``, added
    to ``processes`` (the caller stops them) and started together, and a producer of ``count``
    actions tagged ``tag``; returns once the run is under way for producers and workers
    alike: a third enqueued and 50 done."""
    from tests.support.processes import beat, worker

    queues = ["-Q", "isolated,aol.beat"]
    processes += [worker(log_dir, concurrency=1, env=env, extra=queues) for _ in range(2)]
    processes.append(beat(log_dir, env=env))
    start_together(processes)
    producer = Producer(log_dir, tag, count, env, batch=20, pause=0.1, sleep=0)

    def under_way() -> bool:
        if producer.enqueued() < count // 3:
            return False
        statuses = book.statuses(action_ids(database_url, tag)).values()
        return sum(1 for status in statuses if status == "SUCCESS") >= 50

    try:
        wait_for(under_way, 60, interval=0.05, message="the run to be under way")
    except BaseException:
        producer.stop()
        raise
    return producer


def settle_or_explain(
    book: Any, ids: list[int], processes: list[CeleryProcess], timeout: float = 75.0
) -> None:
    """Wait for every action to be SUCCESS; if they are not, say what each process was doing
    last (a worker that never came back to the broker shows here)."""
    try:
        book.wait_all(ids, "SUCCESS", timeout=timeout)
    except AssertionError as exc:
        # Every log kept where CI can pick it up (the run's temporary folder goes at exit).
        kept = ROOT / "var" / "hosts-logs" / time.strftime("%Y%m%dT%H%M%S")
        kept.mkdir(parents=True, exist_ok=True)
        for p in processes:
            (kept / p.log_path.name).write_text(p.log())
        tails = "\n".join(
            f"--- {p.name}\n" + "\n".join(p.log().splitlines()[-15:]) for p in processes
        )
        raise AssertionError(f"{exc}\nlogs kept in {kept}\n{tails}") from None


def action_ids(database_url: str, tag: str) -> list[int]:
    """The ids of the actions a producer enqueued under ``tag`` (their keys start with it)."""
    from aicmo.db import get_engine

    with get_engine(database_url).connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM aol_actions WHERE idempotency_key LIKE :p ORDER BY id"),
            {"p": f"{tag}%"},
        )
        return [row[0] for row in rows]


def repeat_runs(database_url: str, ids: list[int]) -> int:
    """Handler runs beyond the first (CLAIMED events): each may repeat an external effect,
    which is at-least-once by design (the provider dedupes on the idempotency key)."""
    from aicmo.db import get_engine

    with get_engine(database_url).connect() as conn:
        found = conn.execute(
            text(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM "
                "aol_execution_logs WHERE event = 'CLAIMED' AND action_id = ANY(:ids) "
                "GROUP BY action_id) AS runs"
            ),
            {"ids": ids},
        ).scalar_one()
    return int(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--sleep", type=float, default=0.005, help="the handler's sleep")
    parser.add_argument("--type", default="T_SLOW_EFFECT")
    parser.add_argument("--progress", type=Path, required=True)
    parser.add_argument("--give-up-after", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import tasks  # noqa: F401  (installs the Celery dispatcher: enqueue publishes through it)
    from aicmo.db import session_scope
    from aicmo.orchestration.queue import ActionQueue

    done = 0
    failures = 0
    deadline = time.monotonic() + args.give_up_after
    while done < args.count:
        items = [
            (args.type, {"tag": f"{args.tag}{i}", "sleep": args.sleep}, f"{args.tag}{i}")
            for i in range(done, min(done + args.batch, args.count))
        ]
        try:
            with session_scope() as session:
                ActionQueue.enqueue_many(session, items)
        except Exception as exc:  # the database is away: the same batch again, later
            failures += 1
            log.warning("batch at %d failed (%s); again", done, exc)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        done += len(items)
        args.progress.write_text(f"{done} {failures}\n")
        time.sleep(args.pause)
    log.info("enqueued %d actions (%d failed batches retried)", done, failures)


if __name__ == "__main__":
    main()
