"""Issue #16, scenario 5: PgBouncer in transaction pooling in front of PostgreSQL.

PgBouncer here is Debian's (1.18: no protocol-level prepared statements, those came in 1.21)
with ``server_round_robin``, so one client's consecutive transactions run on different
PostgreSQL sessions. AICMO_DATABASE_POOLER=transaction makes psycopg never prepare; the engine
keeps no other session state. Shown three ways: psycopg's default breaks through it (so the
setting is what makes the rest pass), the engine's own tests pass through it, and a PgBouncer
crash and restart under load with real workers, beat and a producer loses nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aicmo.db import pooler_connect_args
from aicmo.orchestration.store import ActionStore
from tests.conftest import Book
from tests.support.books import Ledger
from tests.support.load_producer import (
    Producer,
    action_ids,
    repeat_runs,
    settle_or_explain,
    start_under_load,
)
from tests.support.pgbouncer import PgBouncer
from tests.support.processes import ROOT, CeleryProcess

pytestmark = [pytest.mark.slow, pytest.mark.hosts]

N = 1000

# The engine through the pooler: enqueue (idempotency, transactional enqueue, crash between
# commit and publish), execution (claims, fencing, retries, DLQ, replay, leases) and the
# sweeper. Two sweeper tests are left out for time: the steady-backlog one waits out ten grace
# periods (about 25 s) and the index one only reads query plans; neither opens a code path
# the others do not.
ENGINE_SUITE = [
    "tests/integration/test_enqueue.py",
    "tests/integration/test_execution.py",
    "tests/integration/test_sweeper.py",
    "-k",
    "not steady_backlog and not reads_indexes",
]


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer()
    try:
        yield bouncer.start()
    finally:
        bouncer.stop()


def _statement_repeated(conn: psycopg.Connection, times: int = 20) -> None:
    for n in range(times):
        assert conn.execute("SELECT %s::int + 1", (n,)).fetchone() == (n + 1,)


def test_psycopg_prepared_statements_break_through_it_unless_the_pooler_is_set(
    pgbouncer: PgBouncer,
) -> None:
    url = pgbouncer.url("postgres", "postgresql")
    pgbouncer.warm("postgres")
    # psycopg's default prepares a statement on its 5th use, on whichever server session
    # that transaction got; the next use lands on another session, which never saw it.
    with (
        psycopg.connect(url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InvalidSqlStatementName),
    ):
        _statement_repeated(conn)
    os.environ["AICMO_DATABASE_POOLER"] = "transaction"
    try:
        from aicmo.config import reload_settings

        reload_settings()
        with psycopg.connect(url, autocommit=True, **pooler_connect_args()) as conn:
            _statement_repeated(conn)
    finally:
        del os.environ["AICMO_DATABASE_POOLER"]
        reload_settings()


def _pooled_transactions(pgbouncer: PgBouncer, database: str) -> int:
    with psycopg.connect(pgbouncer.url("pgbouncer", "postgresql"), autocommit=True) as admin:
        cursor = admin.cursor()
        cursor.execute("SHOW STATS")
        columns = [c.name for c in cursor.description or []]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return sum(int(r["total_xact_count"]) for r in rows if str(r["database"]).startswith(database))


def test_the_engine_suite_passes_through_it(pgbouncer: PgBouncer, log_dir: Path) -> None:
    # The child makes its database through the direct admin URL (PgBouncer in transaction
    # pooling cannot CREATE DATABASE) and connects through PgBouncer for everything else:
    # migrations, the tests themselves, its workers and its sweeper.
    env = {
        **os.environ,
        "AICMO_TEST_PG_CONNECT": pgbouncer.url("postgres", "postgresql"),
        "AICMO_DATABASE_POOLER": "transaction",
    }
    for key in ("AICMO_DATABASE_URL", "AICMO_BROKER_URL"):
        env.pop(key, None)  # the child's conftest sets its own
    before = _pooled_transactions(pgbouncer, "aicmo_test_")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *ENGINE_SUITE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (log_dir / "engine-through-pgbouncer.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    # And it really went through PgBouncer, not around it.
    assert _pooled_transactions(pgbouncer, "aicmo_test_") - before > 500


@pytest.mark.usefixtures("clean")
def test_5_pgbouncer_restarted_mid_run(
    book: Book, ledger: Ledger, pgbouncer: PgBouncer, log_dir: Path, database_url: str
) -> None:
    name = database_url.rsplit("/", 1)[1]
    env = {"AICMO_DATABASE_URL": pgbouncer.url(name), "AICMO_DATABASE_POOLER": "transaction"}
    processes: list[CeleryProcess] = []
    producer: Producer | None = None
    try:
        producer = start_under_load(book, log_dir, database_url, "bouncer", N, env, processes)
        produced_at_restart = producer.enqueued()
        restart_at = time.monotonic() - producer.started
        pgbouncer.kill()  # every client and server connection cut, mid-transaction
        time.sleep(1.0)  # down for a second, as a supervisor would take to restart it
        pgbouncer.start()
        producer.wait(timeout=60)
        assert produced_at_restart < N, "the producer had finished before the restart"

        ids = action_ids(database_url, "bouncer")
        assert len(ids) == N, f"{N - len(ids)} enqueues lost"
        settle_or_explain(book, ids, processes)
        ledger.settle(book, ids, "bouncer")
        repeats = repeat_runs(database_url, ids)
        ledger.notes.append(
            f"PgBouncer killed {restart_at:.1f}s in with {produced_at_restart}/{N} enqueued, "
            f"back 1 s later; {repeats} repeated runs (external effects are at-least-once)"
        )
        print("\n" + ledger.notes[-1])
        assert (ledger.lost, ledger.duplicated) == (0, 0)
        found = ledger.census()
        assert found == [], found[:10]
        for process in processes:
            assert process.alive(), f"{process.name} died with PgBouncer:\n{process.log()[-3000:]}"
    finally:
        if producer is not None:
            producer.stop()
        for process in processes:
            process.stop()


def test_the_hot_path_connection_is_made_without_prepared_statements(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    """The store's own psycopg connection (claim and success bypass SQLAlchemy) gets the
    pooler's options too: its claim statement, run 20 times through PgBouncer, never fails."""
    from sqlalchemy import create_engine

    name = database_url.rsplit("/", 1)[1]
    os.environ["AICMO_DATABASE_POOLER"] = "transaction"
    try:
        from aicmo.config import reload_settings

        reload_settings()
        pgbouncer.warm(name)
        store = ActionStore(create_engine(pgbouncer.url(name)))
        assert store.direct is not None
        for n in range(20):
            assert store.direct.fetchone("SELECT %(n)s::int", {"n": n}, retry=False) == (n,)
        store.direct.close()
    finally:
        del os.environ["AICMO_DATABASE_POOLER"]
        reload_settings()
