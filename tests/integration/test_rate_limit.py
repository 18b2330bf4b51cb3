"""The global rate limit: one token bucket shared by every worker process, measured where it
matters - on the receiving server's side."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicmo.gateways.ports import SocialPost
from aicmo.gateways.webhook import WebhookSocialPoster
from aicmo.orchestration.errors import TransientError
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from aicmo.ratelimit import (
    Bucket,
    Counter,
    FileCounterStore,
    LimitStoreUnavailable,
    RateLimited,
    RateLimiter,
    RedisCounterStore,
)
from tests.conftest import ROOT
from tests.support.fake_http import FakeHTTPServer
from tests.support.gateway_actions import GATEWAYS_QUEUE, live_worker_env, route_gateways_queue
from tests.support.processes import worker

pytestmark = pytest.mark.usefixtures("clean")

PER_MINUTE = 60.0
BURST = 3
SLACK = 1  # one request of tolerance for network jitter between grant and arrival


def worst_excess(times: Sequence[float], per_minute: float, burst: float) -> float:
    """The largest (requests in a window) - (the bucket's allowance for that window), over
    every window that starts and ends on a request. A token bucket keeps it <= 0."""
    ordered = sorted(times)
    rate = per_minute / 60.0
    worst = float("-inf")
    for i, start in enumerate(ordered):
        for j in range(i, len(ordered)):
            worst = max(worst, (j - i + 1) - (burst + rate * (ordered[j] - start)))
    return worst


@pytest.mark.slow
def test_four_workers_share_one_bucket(
    celery_app: Any, log_dir: Path, session: Session, redis_client: redis.Redis
) -> None:
    server = FakeHTTPServer().start()
    route_gateways_queue(celery_app)
    env = live_worker_env(
        social_webhook_urls=json.dumps({"rl": f"{server.url}/rl"}),
        social_requests_per_minute=str(PER_MINUTE),
        social_burst=str(BURST),
        rate_limit_max_wait_seconds="3",
    )
    workers = [
        worker(log_dir, concurrency=2, env=env, extra=["-Q", GATEWAYS_QUEUE]) for _ in range(4)
    ]
    _in_parallel([w.start for w in workers])
    window = 8.0
    try:
        assert all(w.alive() for w in workers)
        with session.begin():
            for n in range(40):
                ActionQueue.enqueue_action(
                    session, "T_GW_POST", {"social_platform": "rl", "content": f"{n}"}, f"rl-{n}"
                )
        started = time.time()
        time.sleep(window)
        arrivals = [s.at for s in server.seen("/rl") if s.at <= started + window]
        rows = session.execute(select(AOLAction.status, AOLAction.claimed_by)).all()
    finally:
        _in_parallel([w.kill for w in workers])  # nothing left to wait for
        server.stop()

    allowance = BURST + PER_MINUTE / 60.0 * window
    excess = worst_excess(arrivals, PER_MINUTE, BURST)
    print(
        f"\n4 workers x 2 processes, bucket {PER_MINUTE:g}/min burst {BURST}: "
        f"{len(arrivals)} requests reached the server in {window:g}s "
        f"(allowance {allowance:g}); worst window excess {excess:.2f}"
    )
    assert len(arrivals) <= allowance + SLACK
    # And it does let traffic through at about its rate (a loose floor: machines get busy).
    assert len(arrivals) >= BURST + 2
    assert excess <= SLACK
    # The workers really did contend: posts went out from several worker processes, and far
    # more actions were ready than the bucket let through.
    senders = {claimed.rsplit("/", 1)[0] for status, claimed in rows if status == "SUCCESS"}
    assert len(senders) >= 2
    assert sum(status != "SUCCESS" for status, _ in rows) >= 20


def _in_parallel(calls: Sequence[Callable[[], object]]) -> None:
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


TAKER = """
import json, sys, time
from pathlib import Path
from aicmo.ratelimit import Bucket, FileCounterStore, RedisCounterStore
kind, where, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = RedisCounterStore(where) if kind == "redis" else FileCounterStore(Path(where))
bucket = Bucket("race", per_minute=60, burst=3)
print("ready", flush=True)
start = float(sys.stdin.readline())  # all four begin together, whatever their start-up took
time.sleep(max(0.0, start - time.time()))
granted = []
while time.time() < start + seconds:
    if store.take([(bucket, 1)]) == 0:
        granted.append(time.time())
    else:
        time.sleep(0.01)
print(json.dumps(granted), flush=True)
"""


def take_in_four_processes(kind: str, wheres: list[str], seconds: float = 2.0) -> list[list[float]]:
    """Each process's grant times."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, kind, where, str(seconds)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for where in wheres
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
    start = time.time() + 0.2
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()  # communicate() closes it
    granted: list[list[float]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        granted.append(json.loads(out))
    return granted


@pytest.mark.parametrize("kind", ["redis", "file"])
def test_both_stores_hold_the_bucket_across_processes(
    kind: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    where = os.environ["AICMO_BROKER_URL"] if kind == "redis" else str(tmp_path / "limits.json")
    granted = [t for mine in take_in_four_processes(kind, [where] * 4) for t in mine]
    # Grants are stamped by the taker itself: no network between grant and stamp (only the
    # odd moment a busy machine deschedules a process in between).
    assert worst_excess(granted, 60, 3) <= 0.5
    assert 3 + 1 <= len(granted) <= 3 + 2 + 1


def test_the_measure_catches_per_process_buckets(tmp_path: Path) -> None:
    """The control: four buckets (one file each, like Celery's per-worker rate_limit) let
    four times the burst through at once, and the same measure says so."""
    each = take_in_four_processes("file", [str(tmp_path / f"own-{n}.json") for n in range(4)])
    assert all(len(mine) >= 3 for mine in each)
    assert worst_excess([t for mine in each for t in mine], 60, 3) >= 8


COUNTER = """
import sys
from pathlib import Path
from aicmo.ratelimit import Counter, FileCounterStore
store = FileCounterStore(Path(sys.argv[1]))
# A large state makes every rewrite of the file long: a kill often lands inside one.
store.add([Counter(f"pad:{i}", None, 1) for i in range(20_000)], 3600)
n = 0
print("ready", flush=True)
while True:
    store.add([Counter("spent", None, 1)], 3600)
    n += 1
    print(n, flush=True)  # only once the add has returned
"""


def test_a_file_store_killed_mid_write_keeps_every_counted_amount(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    rng = random.Random(7)
    before = 0
    for round_ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", COUNTER, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        done = [int(line) for line in out.splitlines() if line.strip().isdigit()]
        counted = done[-1] if done else 0
        try:
            [spent] = FileCounterStore(path).read(["spent"])
        except ValueError as exc:
            pytest.fail(f"round {round_}: the killed write left an unreadable file: {exc}")
        # Every add that returned is in the file (the one cut short may or may not be).
        assert before + counted <= spent <= before + counted + 1, f"round {round_}"
        before = spent


def test_every_redis_store_operation_reports_an_unreachable_store_as_its_own_transient_error() -> (
    None
):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisCounterStore(f"redis://127.0.0.1:{port}/0")
    calls: dict[str, Callable[[], object]] = {
        "take": lambda: store.take([(Bucket("gone", per_minute=60, burst=1), 1)]),
        "reserve": lambda: store.reserve([Counter("gone", 10, 1)], 60),
        "add": lambda: store.add([Counter("gone", None, 1)], 60),
        "read": lambda: store.read(["gone"]),
    }
    for name, call in calls.items():
        with pytest.raises(LimitStoreUnavailable, match="rate-limit store unreachable"):
            call()
        assert isinstance(LimitStoreUnavailable("x"), TransientError), name


def test_a_bucket_takes_requests_and_tokens_together_or_not_at_all(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    for store in (
        RedisCounterStore(os.environ["AICMO_BROKER_URL"]),
        FileCounterStore(tmp_path / "l.json"),
    ):
        requests = Bucket("both:req", per_minute=60, burst=5)
        tokens = Bucket("both:tok", per_minute=600, burst=100)
        assert store.take([(requests, 1), (tokens, 80)]) == 0
        wait = store.take([(requests, 1), (tokens, 80)])  # tokens short: 60 missing at 10/s
        assert wait == pytest.approx(6.0, abs=0.2)
        # The refused call took nothing: four more requests of 5 tokens still fit.
        for _ in range(4):
            assert store.take([(requests, 1), (tokens, 5)]) == 0
        assert store.take([(requests, 1), (tokens, 0.1)]) > 0


def test_a_full_bucket_makes_the_send_a_retry_with_the_bucket_wait(
    redis_client: redis.Redis,
) -> None:
    server = FakeHTTPServer().start()
    try:
        limiter = RateLimiter(RedisCounterStore(os.environ["AICMO_BROKER_URL"]), max_wait=0.2)
        bucket = Bucket("social:direct", per_minute=6, burst=1)
        poster = WebhookSocialPoster("x", f"{server.url}/d", limiter=limiter, bucket=bucket)
        poster.post(SocialPost("x", "one"), "d-1")
        with pytest.raises(RateLimited) as raised:
            poster.post(SocialPost("x", "two"), "d-2")
        assert raised.value.retry_after == pytest.approx(10.0, abs=0.5)  # 6/min: one per 10 s
        assert len(server.seen("/d")) == 1
    finally:
        server.stop()
