"""Issue #16, scenario 4: Redis failover under load, through Redis Sentinel.

A primary, a replica and three ``redis-sentinel`` processes; two workers, beat and a producer
process (and Flower) all reach Redis as ``AICMO_BROKER_URL=sentinel://...;...`` with the master
name. The primary is SIGKILLed mid-run: the sentinels promote the replica, every process
follows, and the sweeper resends what the failover lost (replication is asynchronous, and
messages a worker had taken are gone with their connection). The books must balance: 0 lost,
0 doubled database effects, 0 stranded; Flower lists the workers, the queues and the tasks
run after the failover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicmo.ratelimit import Bucket, LimitStoreUnavailable, RedisCounterStore
from tests.conftest import Book
from tests.support.books import Ledger
from tests.support.load_producer import (
    Producer,
    action_ids,
    repeat_runs,
    settle_or_explain,
    start_under_load,
)
from tests.support.pgbouncer import free_port
from tests.support.processes import CeleryProcess, wait_for
from tests.support.sentinel import MASTER_NAME, SentinelGroup

pytestmark = [pytest.mark.slow, pytest.mark.hosts, pytest.mark.usefixtures("clean")]

N = 1000


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    group = SentinelGroup(down_after_ms=1000, failover_timeout_ms=5000)
    try:
        yield group.start()
    finally:
        group.stop()


def _took(limits: RedisCounterStore, bucket: Bucket) -> bool:
    try:
        return limits.take([(bucket, 1)]) == 0.0
    except LimitStoreUnavailable:  # the first call after the kill finds the old socket dead
        return False


def ping(sentinels: SentinelGroup) -> list[dict[str, object]]:
    from celery import Celery

    app = Celery(
        "ping",
        broker=sentinels.broker_url,
        broker_transport_options={"master_name": MASTER_NAME},
    )
    try:
        return list(app.control.ping(timeout=3) or [])
    finally:
        app.close()


FLOWER_AUTH = ("ops", "flower-sentinel-secret")


def flower_process(log_dir: Path, env: dict[str, str]) -> tuple[CeleryProcess, str]:
    port = free_port()
    process = CeleryProcess(
        "flower",
        ["--address=127.0.0.1", f"--port={port}"],
        log_dir,
        env={**env, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)},
        ready_marker="Visit me at",
    )
    return process, f"http://127.0.0.1:{port}"


def flower_api(url: str, path: str) -> Any:
    reply = httpx.get(f"{url}{path}", auth=FLOWER_AUTH, timeout=10)
    reply.raise_for_status()
    return reply.json()


def flower_sees(url: str, workers: int, since: float) -> bool:
    """Flower lists ``workers`` workers (asked through the broker now), the queue lengths,
    and a task that succeeded after ``since`` (epoch seconds): it follows the events."""
    try:
        listed = flower_api(url, "/api/workers?refresh=1")
        queues = flower_api(url, "/api/queues/length")["active_queues"]
        tasks = flower_api(url, "/api/tasks").values()
    except httpx.HTTPError:
        return False
    return (
        len(listed) == workers
        and "isolated" in {q["name"] for q in queues}
        and any(t.get("state") == "SUCCESS" and (t.get("received") or 0) > since for t in tasks)
    )


def test_4_redis_failover_through_sentinel(
    book: Book, ledger: Ledger, sentinels: SentinelGroup, log_dir: Path, database_url: str
) -> None:
    env = {"AICMO_BROKER_URL": sentinels.broker_url, "AICMO_BROKER_MASTER_NAME": MASTER_NAME}
    # Flower too, on the same sentinel URL: it must follow the failover as the workers do.
    flower, flower_url = flower_process(log_dir, env)
    processes: list[CeleryProcess] = [flower]
    producer: Producer | None = None
    try:
        producer = start_under_load(book, log_dir, database_url, "failover", N, env, processes)
        produced_at_kill = producer.enqueued()
        # The rate limits share the broker's Redis: their store must follow the failover too.
        limits = RedisCounterStore(sentinels.broker_url, master_name=MASTER_NAME)
        bucket = Bucket("failover-test", per_minute=6000, burst=1000)
        assert limits.take([(bucket, 1)]) == 0.0
        sentinels.kill_primary()
        killed, killed_epoch = time.monotonic(), time.time()
        promoted_after = sentinels.wait_promoted()
        wait_for(lambda: _took(limits, bucket), 15, message="the rate limits on the new primary")
        producer.wait(timeout=60)
        assert produced_at_kill < N, "the producer had finished before the failover"

        ids = action_ids(database_url, "failover")
        assert len(ids) == N, f"{N - len(ids)} enqueues lost"
        settle_or_explain(book, ids, processes)
        recovered_after = time.monotonic() - killed
        ledger.settle(book, ids, "failover")
        repeats = repeat_runs(database_url, ids)
        ledger.notes.append(
            f"primary killed {killed - producer.started:.1f}s in, {produced_at_kill}/{N} enqueued; "
            f"replica promoted after {promoted_after:.1f}s; all SUCCESS "
            f"{recovered_after:.1f}s after the kill; "
            f"{repeats} repeated runs (external effects are at-least-once)"
        )
        print("\n" + ledger.notes[-1])
        assert (ledger.lost, ledger.duplicated) == (0, 0)
        found = ledger.census()
        assert found == [], found[:10]
        # The producer's publishes took the pipelined path on the sentinel transport.
        assert "fast publish unavailable" not in producer.log_path.read_text()
        for process in processes:
            assert process.alive(), f"{process.name} died in the failover:\n{process.log()[-3000:]}"
        # Every worker follows the new primary: a broadcast ping through it reaches them all.
        assert sentinels.master_port() == sentinels.replica_port
        assert len(ping(sentinels)) == 2
        # Flower reconnected to the promoted replica: workers, queues, tasks since the kill.
        wait_for(
            lambda: flower_sees(flower_url, 2, killed_epoch + 1),
            30,
            interval=0.5,
            message="flower to follow the failover",
        )
    finally:
        if producer is not None:
            producer.stop()
        for process in processes:
            process.stop()
