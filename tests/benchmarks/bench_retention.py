"""``python -m tests.benchmarks.bench_retention`` (also run by ``make bench``): the cost of one
``aol.purge`` batch on a table of 100,000, 1,000,000 and 10,000,000 finished actions (one
execution-log row each, in monthly partitions), to show it stays flat: the batch is read from
the partial index ``ix_aol_actions_finished`` oldest first (the plan is printed), so it costs
what it deletes, not the table's size.

The table grows in place (``INSERT .. SELECT generate_series``) from one size to the next, with
progress printed; 10M takes minutes. Half of the rows are older than the retention. At each
size ``--batches`` committed batches of ``--batch-size`` run (they delete a sliver of the
table). Not a timed test: it prints figures and writes BENCHMARKS-retention.md. Its database is
its own and is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import text

from tests.support import services
from tests.support.processes import ROOT

SPAN_DAYS = 90  # finished times spread over the last 90 days; retention 30: two thirds old
CHUNK = 1_000_000

FILL = """
INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status, not_before_utc,
    attempts, max_attempts, created_at_utc, updated_at_utc, finished_at_utc)
SELECT 'ret:' || g, 'SEND_EMAIL', jsonb_build_object('n', g),
       CASE WHEN g % 100 = 0 THEN 'DLQ' ELSE 'SUCCESS' END, t, 1, 5, t, t, t
FROM (SELECT g, {when} AS t FROM generate_series({lo}, {hi}) AS g) AS s
"""
# As in production, actions finish roughly in the order they were made (ten minutes of
# jitter): the oldest finished rows are the oldest rows. ``--random-order`` is the worst case,
# finish times unrelated to the physical order (every row of a batch on its own page).
IN_ORDER = (
    "now() - make_interval(days => {span}) + make_interval(secs => g * {span} * 86400.0 / {total}"
    " + (hashint8(g)::bigint & 2147483647) % 600)"
)
RANDOM = "now() - make_interval(secs => (hashint8(g)::bigint & 2147483647) % ({span} * 86400))"
FILL_LOGS = """
INSERT INTO aol_execution_logs (action_id, event, attempt, worker, duration_ms, created_at_utc)
SELECT id, 'SUCCEEDED', 1, 'bench-host/1/x', 12.5, finished_at_utc
FROM aol_actions WHERE id BETWEEN {lo} AND {hi}
"""


def grow(dsn: str, first: int, count: int, when: str) -> None:
    """Add ``count`` actions numbered from ``first`` (and a log row each)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        last_g = first + count - 1
        for lo in range(first, last_g + 1, CHUNK):
            hi = min(lo + CHUNK - 1, last_g)
            conn.execute(FILL.format(when=when, lo=lo, hi=hi))
            low_id, high_id = conn.execute(
                f"SELECT min(id), max(id) FROM aol_actions WHERE idempotency_key"
                f" IN ('ret:{lo}', 'ret:{hi}')"
            ).fetchone() or (0, 0)
            conn.execute(FILL_LOGS.format(lo=low_id, hi=high_id))
            print(
                f"  added {hi - first + 1:>11,} / {count:,} actions (+ logs), "
                f"{time.monotonic() - started:6.0f} s",
                flush=True,
            )
        conn.execute("VACUUM ANALYZE aol_actions")
        conn.execute("ANALYZE aol_execution_logs")


def plan(dsn: str, retention: timedelta, batch: int) -> str:
    from aicmo.db import get_engine
    from aicmo.orchestration.purge import batch_query

    url = dsn.replace("postgresql://", "postgresql+psycopg://")
    query = batch_query(datetime.now(UTC) - retention, batch)
    compiled = query.compile(
        dialect=get_engine(url).dialect, compile_kwargs={"literal_binds": True}
    )
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}").fetchall()
    return "\n".join(r[0] for r in rows)


def measure(url: str, retention: timedelta, batch: int, batches: int) -> list[float]:
    from aicmo.orchestration.purge import purge_finished

    times = []
    for _ in range(batches):
        report = purge_finished(retention, batch_size=batch, max_batches=1, url=url)
        times.append(report.seconds * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_retention")
    parser.add_argument(
        "--rows",
        default="100000,1000000,10000000",
        help="comma-separated table sizes, ascending (the table grows from one to the next)",
    )
    parser.add_argument(
        "--random-order",
        action="store_true",
        help="finish times unrelated to the rows' physical order (the worst case)",
    )
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS-retention.md")
    args = parser.parse_args(argv)
    sizes = sorted(int(n.replace("_", "")) for n in args.rows.split(","))
    retention = timedelta(days=30)

    name = f"aicmo_bench_retention_{os.getpid()}"
    found = services.TestServices(name, 0)
    services.create_database(name)
    url = found.database_url
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    results: list[tuple[int, list[float], str]] = []
    try:
        from aicmo.db import get_engine
        from aicmo.migrate import upgrade
        from aicmo.orchestration import partitions

        upgrade(url)
        with get_engine(url).connect() as conn:  # the months the finished times fall in
            now = partitions.month_start(conn.scalar(text("SELECT now()")))
            conn.rollback()
            for shift in range(-(SPAN_DAYS // 28) - 1, 0):
                with conn.begin():
                    partitions.create_month(conn, partitions.add_months(now, shift))
        have = numbered = 0
        for size in sizes:
            when = (RANDOM if args.random_order else IN_ORDER).format(
                span=SPAN_DAYS, total=sizes[-1]
            )
            grow(dsn, numbered + 1, size - have, when)
            numbered += size - have
            have = size
            the_plan = plan(dsn, retention, args.batch_size)
            times = measure(url, retention, args.batch_size, args.batches)
            have -= args.batch_size * args.batches
            results.append((size, times, the_plan))
            print(
                f"  {size:>11,} rows: one batch of {args.batch_size:,} median "
                f"{statistics.median(times):7.1f} ms (min {min(times):.1f}, max {max(times):.1f})",
                flush=True,
            )
            print("    " + the_plan.replace("\n", "\n    "), flush=True)
        write_report(args, results)
        return 0
    finally:
        from aicmo.db import dispose_engines

        dispose_engines()
        services.drop_database(name)


def write_report(args: argparse.Namespace, results: list[tuple[int, list[float], str]]) -> None:
    load = os.getloadavg()
    lines = [
        "# Retention at scale: one purge batch against the table's size",
        "",
        f"`python -m tests.benchmarks.bench_retention` on {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC, PostgreSQL, {os.cpu_count()} cores, **busy machine** (other runs at the same "
        f"time; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end). "
        f"Finished actions spread over {SPAN_DAYS} days "
        f"({'in random physical order' if args.random_order else 'in the order they were made'}"
        f"; two thirds of the largest table older than the 30-day retention), one "
        f"execution-log row each in monthly partitions; {args.batches} "
        f"committed `aol.purge` batches of {args.batch_size:,} per size (read, delete their "
        "logs of the boundary month, delete the actions, commit).",
        "",
        "| finished actions | batch median ms | min ms | max ms | per action µs |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, times, _ in results:
        median = statistics.median(times)
        lines.append(
            f"| {size:,} | {median:.1f} | {min(times):.1f} | {max(times):.1f} | "
            f"{median * 1000 / args.batch_size:.1f} |"
        )
    size, _, the_plan = results[-1]
    lines += [
        "",
        f"The batch's query plan at {size:,} rows (`EXPLAIN ANALYZE`):",
        "",
        "```",
        the_plan,
        "```",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print(f"  wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
