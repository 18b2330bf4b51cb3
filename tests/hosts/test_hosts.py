"""Worker hosts on a real network (issue #16, scenarios 1-3): each host is a network namespace
with its own address, reaching PostgreSQL and Redis over a veth pair, running a real
``celery worker -c 2``. The link is then broken for real (``tc netem``), or the host's clock is.

Each scenario runs 1,000+ actions (an external HTTP call, then a database row) and balances the
chaos books: lost, duplicated database effects, stranded (``aicmo doctor``), plus the external
calls, whose duplicates are documented, not failures (at-least-once, with idempotency keys).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from aicmo.db import get_engine, session_scope
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import ROOT, BackgroundSweeper, Book
from tests.hosts.conftest import HostBooks
from tests.support.books import Ledger
from tests.support.host_actions import HOST_EFFECT
from tests.support.hosts import Host, HostNet
from tests.support.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.hosts, pytest.mark.usefixtures("clean")]

N = 1000
LEASE = 4.0  # T_HOST_EFFECT: hard limit 3 s + the tests' 1 s lease margin


def enqueue(tag: str, n: int = N, sleep: float = 0.05, long_every: int = 0) -> list[int]:
    items = []
    for i in range(n):
        slow = long_every and i % long_every == 0
        items.append((HOST_EFFECT, {"tag": f"{tag}{i}", "sleep": 0.8 if slow else sleep}))
    with session_scope() as s:
        return [d.action_id for d in ActionQueue.enqueue_many(s, items)]


def successes(book: Book, ids: list[int]) -> int:
    return sum(1 for s in book.statuses(ids).values() if s == "SUCCESS")


def effects_by_host(database_url: str, tag: str) -> dict[str, int]:
    with get_engine(database_url).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT split_part(worker, ' ', 1), count(*) FROM test_effects "
                "WHERE tag LIKE :p GROUP BY 1"
            ),
            {"p": f"{tag}%"},
        ).all()
    return {row[0]: row[1] for row in rows}


def running_on(database_url: str, host: Host, min_sleep: float = 0.0) -> int:
    """RUNNING actions claimed by this host (sleeping at least ``min_sleep`` s)."""
    tokens = list(host.late_tokens(0))
    with get_engine(database_url).connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM aol_actions WHERE status = 'RUNNING' "
                    "AND (claimed_by = ANY(:tokens)"
                    " OR split_part(claimed_by, '#', 1) = ANY(:tokens)) "
                    "AND CAST(payload_json->>'sleep' AS FLOAT) >= :min_sleep"
                ),
                {"tokens": tokens, "min_sleep": min_sleep},
            ).scalar()
            or 0
        )


def on_host(token: str, host_tokens: set[str]) -> bool:
    """A token this host used: its own, or one of a batch it claimed (batch token + "#id")."""
    return token in host_tokens or token.split("#", 1)[0] in host_tokens


def events(database_url: str, event: str) -> list[tuple[int, str]]:
    with get_engine(database_url).connect() as conn:
        rows = conn.execute(
            text("SELECT action_id, worker FROM aol_execution_logs WHERE event = :e"),
            {"e": event},
        ).all()
    return [(row[0], row[1] or "") for row in rows]


def balance(
    book: Book, ledger: Ledger, books: HostBooks, net: HostNet, ids: list[int], tag: str
) -> None:
    """The chaos books for these actions: nothing lost, no database effect twice, nothing
    stranded; external calls counted (their duplicates are documented, not failures)."""
    # Generous for a busy 2-core machine; on a quiet one each scenario ends in ~30-40 s.
    book.wait_all(ids, "SUCCESS", timeout=75)
    ledger.settle(book, ids, tag)
    books.external_calls = net.receiver.total()
    books.external_duplicated = net.receiver.duplicated()
    assert (ledger.lost, ledger.duplicated) == (0, 0)
    found = ledger.census()
    assert found == [], found[:10]


@contextlib.contextmanager
def swept() -> Iterator[BackgroundSweeper]:
    """The sweeper, running before the first enqueue: its first sweep finds the broker reset
    by ``clean`` (no canary) and would otherwise send all 1,000 actions a second time."""
    with BackgroundSweeper() as sweeper:
        wait_for(lambda: sweeper.reports, 10, message="a first sweep")
        yield sweeper


def start(net: HostNet, log_dir: Path, count: int = 2, faketime: str | None = None) -> list[Host]:
    hosts = net.add(count)
    for n, host in enumerate(hosts):
        host.worker(log_dir, concurrency=2, faketime=faketime if n == 0 else None)
    return hosts


def test_1_partitioned_host_expired_run_elsewhere_late_outcomes_fenced(
    book: Book,
    ledger: Ledger,
    host_books: HostBooks,
    hostnet: HostNet,
    log_dir: Path,
    database_url: str,
) -> None:
    cut, _ = start(hostnet, log_dir)
    with swept():
        ids = enqueue("part", sleep=0.02, long_every=10)
        wait_for(lambda: successes(book, ids) > 100, 60, message="the run to be under way")
        # Cut while the host is in one of the 0.8 s runs (its token, as its forwarder saw it,
        # on a RUNNING row), so a run is surely caught by the cut for its lease to expire.
        wait_for(lambda: running_on(database_url, cut, min_sleep=0.5) > 0, 30, message="a long run")
        cut.partition()
        partitioned_at = time.time()
        time.sleep(LEASE + 2)  # longer than the lease: its running actions expire
        cut.heal()
        healed_at = time.time()
        balance(book, ledger, host_books, hostnet, ids, "part")
    cut_tokens = cut.late_tokens(0)
    expired = [(a, w) for a, w in events(database_url, "LEASE_EXPIRED") if on_host(w, cut_tokens)]
    expired_tokens = {w for _, w in expired}
    assert expired, "the partition outlived the lease, yet none of the cut host's runs expired"
    # Each expired run was killed by its hard time limit with its last statement (the outcome)
    # still in the kernel's send buffer; after the heal TCP delivers it, and the fencing token
    # refuses it. Wait for every one of them to arrive (TCP's retransmit backoff: seconds).
    # (Actions of a batch still waiting their turn expire too, with no outcome to send.)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: cut.late_tokens(healed_at) & expired_tokens, 15, interval=0.5)
    late = cut.late_tokens(healed_at) & expired_tokens
    assert late, "no late outcome of an expired run reached the database after the heal"
    succeeded_tokens = {w for _, w in events(database_url, "SUCCEEDED")}
    lease_lost = [w for _, w in events(database_url, "LEASE_LOST") if on_host(w, cut_tokens)]
    # Fencing: no run whose lease expired ever recorded its outcome.
    assert not expired_tokens & succeeded_tokens
    by_host = effects_by_host(database_url, "part")
    host_books.figures.update(
        {
            "partition s": round(healed_at - partitioned_at, 1),
            "expired on cut host": len(expired),
            "late statements refused by token": len(late),
            "LEASE_LOST": len(lease_lost),
            "effects by host": by_host,
        }
    )
    ledger.notes.append(str(host_books.figures))


def test_2_slow_lossy_link_finishes_without_duplicates(
    book: Book,
    ledger: Ledger,
    host_books: HostBooks,
    hostnet: HostNet,
    log_dir: Path,
    database_url: str,
) -> None:
    slow, fast = start(hostnet, log_dir)
    slow.degrade(delay_ms=50, jitter_ms=20, loss_percent=1)
    started = time.monotonic()
    with swept():
        ids = enqueue("lossy", sleep=0.0)
        balance(book, ledger, host_books, hostnet, ids, "lossy")
    elapsed = time.monotonic() - started
    by_host = effects_by_host(database_url, "lossy")
    slow_rate = by_host.get(slow.name, 0) / elapsed
    fast_rate = by_host.get(fast.name, 0) / elapsed
    assert by_host.get(slow.name, 0) > 0, "the slow host ran nothing"
    host_books.figures.update(
        {
            "seconds": round(elapsed, 1),
            "slow host actions/s": round(slow_rate, 1),
            "clean host actions/s": round(fast_rate, 1),
            "cost": f"{(1 - slow_rate / fast_rate) * 100:.0f}% of a host" if fast_rate else "-",
        }
    )


SWEEP_LOOP = """
import time, tasks
from aicmo.orchestration.sweeper import Sweeper
sweeper = Sweeper()
while True:
    sweeper.sweep()
    time.sleep(0.3)
"""


def test_3_host_clock_five_minutes_ahead_runs_nothing_twice(
    book: Book,
    ledger: Ledger,
    host_books: HostBooks,
    hostnet: HostNet,
    log_dir: Path,
    database_url: str,
) -> None:
    ahead, _ = start(hostnet, log_dir, faketime="+5m")
    # A sweeper on the fast host too: were leases judged by its clock, every running action
    # would look five minutes expired to it.
    sweeper = subprocess.Popen(
        [*ahead.exec_prefix("+5m"), sys.executable, "-c", SWEEP_LOOP],
        cwd=ROOT,
        env={**os.environ, **ahead.env},
        stdout=subprocess.DEVNULL,
        stderr=(log_dir / "ahead-sweeper.log").open("ab"),
        start_new_session=True,
    )
    try:
        # One in 25 runs 0.8 s, well inside its 4 s lease but long enough to be expired early.
        with swept():
            ids = enqueue("skew", sleep=0.0, long_every=25)
            balance(book, ledger, host_books, hostnet, ids, "skew")
    finally:
        os.killpg(sweeper.pid, signal.SIGKILL)
        sweeper.wait(timeout=10)
    assert events(database_url, "LEASE_EXPIRED") == [], "a lease expired early"
    with get_engine(database_url).connect() as conn:
        # A second attempt is only fair after the first one ended in a recorded failure (on
        # this busy machine a soft time limit may hit): never two runs of one claim's lease.
        unfair = conn.execute(
            text(
                "SELECT count(*) FROM aol_actions a WHERE a.id = ANY(:ids) AND a.attempts - 1 > "
                "(SELECT count(*) FROM aol_execution_logs l WHERE l.action_id = a.id "
                "AND l.event = 'RETRY_SCHEDULED')"
            ),
            {"ids": ids},
        ).scalar()
        retried = conn.execute(
            text("SELECT count(*) FROM aol_actions WHERE attempts > 1 AND id = ANY(:ids)"),
            {"ids": ids},
        ).scalar()
    assert unfair == 0, f"{unfair} actions claimed again while a run of theirs was not over"
    host_books.figures["retried after a recorded failure"] = retried
    by_host = effects_by_host(database_url, "skew")
    assert by_host.get(ahead.name, 0) > 0, "the host whose clock is ahead ran nothing"
    host_books.figures["effects by host"] = by_host
