"""Throughput with 1, 2 and 4 worker hosts (network namespaces, tests/support/hosts.py), where
the wall is, and what one action costs PostgreSQL and Redis: writes BENCHMARKS-hosts.md.

``python -m tests.benchmarks.bench_hosts`` (root: it makes namespaces). The run has its own
PostgreSQL database and its own ``redis-server`` on a free port, so the Redis command counts
(INFO commandstats) and its CPU are this run's alone; PostgreSQL's are read for the run's
database (pg_stat_database) and its backends (/proc). Every host runs ``celery worker -c C``
of T_HOST_EFFECT without the external call: a claim, one row written, SUCCESS.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
N = int(os.environ.get("BENCH_HOSTS_ACTIONS", "1500"))
LAYOUTS = [(1, 2), (2, 1), (2, 2), (4, 1), (4, 2)]  # (hosts, worker processes per host)
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICKS


def netns_pids(netns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def main() -> int:
    from tests.support import services

    name = f"aicmo_bench_hosts_{os.getpid()}"
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="aicmo-bench-hosts-"))
    redis_proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    services.create_database(name)
    database_url = services.TestServices(name, 0).database_url
    os.environ.update(
        {
            "AICMO_DATABASE_URL": database_url,
            "AICMO_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "AICMO_ARTIFACT_DIR": str(tmp / "artifacts"),
            "AICMO_ACTION_MODULES": "aicmo.orchestration.adapters,tests.support.actions,"
            "tests.support.host_actions",
            "AICMO_PROOF_MODE": "true",
            "AICMO_LEASE_MARGIN_SECONDS": "1",
            "AICMO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    try:
        rows = [measure(database_url, port, hosts, c, tmp) for hosts, c in LAYOUTS]
    finally:
        redis_proc.kill()
        services.drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)
    write_report(rows)
    return 0


def measure(database_url: str, port: int, hosts: int, per_host: int, tmp: Path) -> dict[str, Any]:
    import psycopg
    import redis
    from sqlalchemy import text

    from aicmo.db import get_engine, session_scope
    from aicmo.migrate import upgrade
    from aicmo.orchestration.queue import ActionQueue
    from tests.support import services
    from tests.support.actions import EFFECTS_DDL
    from tests.support.host_actions import EFFECT_URL_ENV, HOST_EFFECT
    from tests.support.hosts import HostNet

    upgrade(database_url)
    engine = get_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(EFFECTS_DDL.format(id_type="BIGSERIAL PRIMARY KEY")))
        conn.execute(text("TRUNCATE aol_execution_logs, aol_actions, test_effects"))
    client = redis.Redis(port=port)
    client.flushall()  # the run's own redis-server
    net = HostNet(database_url, f"redis://127.0.0.1:{port}/0", tmp)
    try:
        made = net.add(hosts)
        for host in made:
            host.env.pop(EFFECT_URL_ENV, None)
            host.env["AICMO_LOG_LEVEL"] = "WARNING"
            host.worker(tmp, concurrency=per_host)
        admin = psycopg.connect(services.PG_ADMIN_URL, autocommit=True)
        name = database_url.rsplit("/", 1)[1]

        def pg_counts() -> tuple[int, int, int, int]:
            row = admin.execute(
                "SELECT xact_commit, tup_inserted, tup_updated, tup_fetched "
                "FROM pg_stat_database WHERE datname = %s",
                (name,),
            ).fetchone()
            assert row is not None
            return row[0], row[1], row[2], row[3]

        def pg_pids() -> list[int]:
            return [
                r[0]
                for r in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
                ).fetchall()
            ]

        def redis_calls() -> dict[str, int]:
            stats = client.info("commandstats")
            return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

        redis_pid = int(client.info("server")["process_id"])
        workers = [pid for h in made for pid in netns_pids(h.netns)]
        forwarders = [f.pid for f in net._forwarders]
        me = [os.getpid()]
        time.sleep(1.0)
        admin.execute("SELECT pg_stat_clear_snapshot()")
        pg0, calls0 = pg_counts(), redis_calls()
        backends0 = pg_pids()
        cpu0 = {
            "workers": cpu_seconds(workers),
            "forwarders": cpu_seconds(forwarders),
            "redis": cpu_seconds([redis_pid]),
            "postgres": cpu_seconds(backends0),
            "producer": cpu_seconds(me),
        }
        started = time.monotonic()
        with session_scope() as s:
            ActionQueue.enqueue_many(s, [(HOST_EFFECT, {"tag": f"b{i}"}) for i in range(N)])
        enqueued = time.monotonic() - started
        while True:
            with engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM aol_actions WHERE status <> 'SUCCESS'")
                ).scalar()
            if not left:
                break
            if time.monotonic() - started > 600:
                raise RuntimeError(f"{left} actions unfinished after 600 s")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        time.sleep(0.6)  # pg_stat_database is flushed by backends about every 0.5 s
        admin.execute("SELECT pg_stat_clear_snapshot()")
        pg1, calls1 = pg_counts(), redis_calls()
        backends = sorted(set(backends0) | set(pg_pids()))
        cpu = {
            "workers": cpu_seconds(workers) - cpu0["workers"],
            "forwarders": cpu_seconds(forwarders) - cpu0["forwarders"],
            "redis": cpu_seconds([redis_pid]) - cpu0["redis"],
            # Backends opened during the run start from 0; the ones before, from cpu0.
            "postgres": cpu_seconds(backends) - cpu0["postgres"],
            "producer": cpu_seconds(me) - cpu0["producer"],
        }
        admin.close()
    finally:
        net.close()
    redis_delta = {k: calls1.get(k, 0) - calls0.get(k, 0) for k in calls1}
    redis_delta = {k: v for k, v in redis_delta.items() if v > 0 and k not in ("info",)}
    return {
        "hosts": hosts,
        "per_host": per_host,
        "processes": hosts * per_host,
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "rate": N / elapsed,
        "cpu": {k: v / elapsed for k, v in cpu.items()},  # cores busy on average
        "pg_per_action": {
            "transactions": (pg1[0] - pg0[0]) / N,
            "rows inserted": (pg1[1] - pg0[1]) / N,
            "rows updated": (pg1[2] - pg0[2]) / N,
            "rows fetched": (pg1[3] - pg0[3]) / N,
        },
        "redis_per_action": sum(redis_delta.values()) / N,
        "redis_top": sorted(redis_delta.items(), key=lambda kv: -kv[1])[:6],
    }


def write_report(rows: list[dict[str, Any]]) -> None:
    load = os.getloadavg()
    lines = [
        "# Worker hosts: throughput, the wall, and the cost of one action",
        "",
        f"`make bench` (tests/benchmarks/bench_hosts.py), {N} actions per layout, "
        f"{os.cpu_count()} cores. **Measured on a busy machine** (other test runs at the same "
        f"time; load average {load[0]:.1f} at the end): the ratios and per-action counts hold, "
        "the absolute rates are low; the quiet-machine run is the lead's.",
        "",
        "Each host is a network namespace with its own veth address, reaching PostgreSQL and "
        "Redis through a TCP forwarder in the root namespace (a hop a real network has too). "
        "Action: T_HOST_EFFECT without its external call: claim, one row written in the "
        "handler's transaction, SUCCESS.",
        "",
        "| hosts x processes | actions/s | workers (cores) | PostgreSQL | Redis | forwarders "
        "| producer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["cpu"]
        lines.append(
            f"| {r['hosts']} x {r['per_host']} = {r['processes']} | {r['rate']:.0f} "
            f"| {c['workers']:.2f} | {c['postgres']:.2f} | {c['redis']:.2f} "
            f"| {c['forwarders']:.2f} | {c['producer']:.2f} |"
        )
    top = max(rows, key=lambda r: r["rate"])
    ms = {k: v / top["rate"] * 1000 for k, v in top["cpu"].items()}
    used = sum(top["cpu"].values())
    lines += [
        "",
        "## Where the wall is",
        "",
        f"At the highest rate ({top['hosts']} x {top['per_host']}, {top['rate']:.0f}/s) one "
        f"action cost {ms['workers']:.2f} ms of worker CPU, {ms['postgres']:.2f} ms of "
        f"PostgreSQL, {ms['redis']:.2f} ms of Redis and {ms['forwarders']:.2f} ms in the "
        f"test-only forwarders. Together these parts kept {used:.2f} of the "
        f"{os.cpu_count()} cores busy: "
        + (
            "the machine's other load (the 1-minute load average above) was the wall, and "
            "more worker processes bought a larger share of the scheduler, which is why the rate "
            "grows with processes while no part is saturated."
            if used < 0.8 * (os.cpu_count() or 1)
            else "the CPU was the wall."
        )
        + f" On a machine of its own the worker is the wall: it takes "
        f"{ms['workers'] / max(1e-9, sum(ms.values())) * 100:.0f}% of the CPU an action costs, "
        f"so per core: ~{1000 / max(1e-9, ms['workers']):.0f} actions/s of workers, "
        f"~{1000 / max(1e-9, ms['postgres']):.0f}/s of PostgreSQL, "
        f"~{1000 / max(1e-9, ms['redis']):.0f}/s of Redis (busy-machine CPU costs, which "
        "overstate what a quiet core spends).",
    ]
    first = rows[0]
    pg = first["pg_per_action"]
    lines += [
        "",
        "CPU columns: cores busy on average during the run (from /proc; PostgreSQL = the run's "
        "backends, Redis = the run's own redis-server).",
        "",
        "## Per action",
        "",
        f"- PostgreSQL (pg_stat_database of the run's database, {first['hosts']} x "
        f"{first['per_host']}): {pg['transactions']:.1f} transactions, "
        f"{pg['rows inserted']:.1f} rows inserted, {pg['rows updated']:.1f} updated, "
        f"{pg['rows fetched']:.1f} fetched.",
        f"- Redis: {first['redis_per_action']:.1f} commands "
        f"(top: {', '.join(f'{k} {v / N:.2f}' for k, v in first['redis_top'])}).",
    ]
    for r in rows[1:]:
        lines.append(
            f"- {r['hosts']} x {r['per_host']}: {r['pg_per_action']['transactions']:.1f} "
            f"transactions, {r['redis_per_action']:.1f} Redis commands per action."
        )
    (ROOT / "var").mkdir(exist_ok=True)
    (ROOT / "var" / "bench-hosts.json").write_text(json.dumps(rows, indent=1))
    out = ROOT / "BENCHMARKS-hosts.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
