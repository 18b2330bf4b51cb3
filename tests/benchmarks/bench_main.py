"""``python -m tests.benchmarks``: the command line of the benchmark harness (``make bench``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmarks.bench_env import BenchEnv
from tests.support.processes import ROOT
from tests.support.services import ServiceMissing

# In the order a full run measures them (the long sweeper seeding near the end).
FIGURES = (
    "enqueue_one",
    "enqueue_bulk",
    "e2e",
    "drain",
    "latency",
    "embedded",
    "sweeper",
    "fanout",
    "profiles",
)
ALIASES = {"memory": "e2e", "throughput": "e2e", "enqueue": "enqueue_one,enqueue_bulk"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description="aicmo against plain Celery, side by side in one run; writes BENCHMARKS.md "
        "after a full run. Needs PostgreSQL and Redis on localhost (AICMO_TEST_PG_ADMIN, "
        "AICMO_TEST_REDIS).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, 1 repetition, no context rows (under a minute)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"measure only these figures (repeat or comma-separate): "
        f"{', '.join(FIGURES)}; 'memory' is measured with e2e",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help="repetitions per figure (default: 5 for the headline figures, e2e and drain, "
        "3 for the others; quick 1); the median is shown",
    )
    parser.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure Dramatiq (Redis broker) and Procrastinate (PostgreSQL) in the e2e "
        "figure, no-op and one PostgreSQL write per job (default: on, off with --quick; "
        "needs `pip install -e '.[bench]'`)",
    )
    parser.add_argument(
        "--context",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure plain + one PostgreSQL state row per task and aicmo's producer "
        "in batches (default: on, off with --quick)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the figures: profile the workers during the e2e run "
        "and write the top functions to --profile-dir/profile.txt",
    )
    parser.add_argument(
        "--profiler",
        choices=("py-spy", "pyinstrument"),
        default="py-spy",
        help="py-spy attaches to the real workers; pyinstrument runs the "
        "executor loop in this process (the fallback when py-spy fails)",
    )
    parser.add_argument(
        "--profile-count",
        type=int,
        default=None,
        help="actions in the profiled run (default: the e2e size)",
    )
    parser.add_argument("--profile-dir", type=Path, default=ROOT / "var" / "benchmarks")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write the report here (default: BENCHMARKS.md after a full run "
        "of every figure; partial and quick runs write none unless asked)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw results as JSON")
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="JSON",
        help="start from a full run's --json results and measure only the --only figures "
        "again (the report says which); writes BENCHMARKS.md unless --quick",
    )
    parser.add_argument("--log-level", default="INFO", help="workers' log level (both sides)")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the temp folder with the workers' logs"
    )

    return parser.parse_args(argv)


def selected(only: list[str]) -> list[str]:
    if not only:
        return list(FIGURES)
    names: list[str] = []
    for chunk in only:
        for raw in chunk.split(","):
            name = raw.strip()
            for resolved in ALIASES.get(name, name).split(","):
                if resolved not in FIGURES:
                    raise SystemExit(f"unknown figure {name!r}; choose from {', '.join(FIGURES)}")
                if resolved not in names:
                    names.append(resolved)
    return [name for name in FIGURES if name in names]


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("interrupted: workers stopped, database dropped", file=sys.stderr)
        return 130


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = selected(args.only)
    reps = args.reps or (1 if args.quick else 3)
    headline_reps = args.reps or (1 if args.quick else 5)
    context = args.context if args.context is not None else not args.quick
    references = args.references if args.references is not None else not args.quick
    command = "python -m tests.benchmarks" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    started_at = datetime.now(UTC)
    wall = time.monotonic()
    load_start = os.getloadavg()
    print(f"aicmo benchmarks: {command}", flush=True)
    print(
        f"  load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} on "
        f"{os.cpu_count()} cores",
        flush=True,
    )

    env = BenchEnv(keep_logs=args.keep_logs)
    try:
        try:
            env.open()
        except ServiceMissing as exc:
            print(f"benchmarks need PostgreSQL and Redis: {exc}", file=sys.stderr)
            return 2
        env.install_process_env()
        shown = env.shell_settings_shown()
        print(
            "  aicmo settings from the shell (both sides' workers get them): "
            + (", ".join(f"{k}={v}" for k, v in shown.items()) or "none"),
            flush=True,
        )
        from tests.benchmarks.bench_settings import check_symmetric

        problems = check_symmetric(
            lambda events: env.base_env({**env.aicmo_env(), **env.plain_env(events)})
        )
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 3
        print("  both apps' effective Celery settings compared: the same", flush=True)
        # This process only enqueues and reads: its aicmo log lines would clutter the table.
        logging.getLogger("aicmo").setLevel(logging.ERROR)
        print(
            f"  database {env.database_name}, redis db {env.redis_db}, temp {env.tmp}", flush=True
        )
        from aicmo.migrate import upgrade

        upgrade(env.database_url)
        # aicmo is imported only now: its settings are read from the environment set above.
        from tests.benchmarks import bench_figures, bench_report, bench_results
        from tests.benchmarks.bench_explain import figure_profiles

        sizes = bench_results.QUICK if args.quick else bench_results.FULL
        bench = bench_figures.Bench(
            env,
            sizes,
            reps,
            context,
            log_level=args.log_level,
            headline_reps=headline_reps,
            references=references,
        )
        if args.merge is not None:
            bench.results = bench_results.Results.from_json(json.loads(args.merge.read_text()))
            for name in figures:
                bench.results.drop(name)
                bench.results.note(
                    name,
                    f"measured again by `{command}` at {started_at:%Y-%m-%d %H:%M} UTC; the "
                    f"other figures come from {args.merge.name}",
                )
        try:
            if args.profile:
                from tests.benchmarks.bench_profile import run_profile

                path = run_profile(
                    bench, args.profile_dir, args.profile_count or sizes.e2e, args.profiler
                )
                print(path.read_text())
                print(f"profile written to {path}")
                return 0
            steps: dict[str, Callable[[], None]] = {
                "enqueue_one": bench.figure_enqueue_one,
                "enqueue_bulk": bench.figure_enqueue_bulk,
                "e2e": bench.figure_e2e,
                "drain": bench.figure_drain,
                "latency": bench.figure_latency,
                "embedded": bench.figure_embedded,
                "sweeper": bench.figure_sweeper,
                "fanout": bench.figure_fanout,
                "profiles": lambda: figure_profiles(bench, min(sizes.e2e, 3000)),
            }
            for name in figures:
                print(f"{name} ...", flush=True)
                try:
                    steps[name]()
                except Exception as exc:
                    # One broken figure must not cost the others: report it and go on.
                    traceback.print_exc()
                    bench.results.not_measured[name] = f"error: {type(exc).__name__}: {exc}"
                    env.stop_workers()
            facts = bench_report.machine_facts(bench.pg, bench.redis)
            facts.update({name: version for name, version in bench.results.versions.items()})
            facts["aicmo settings from the shell"] = (
                ", ".join(f"{k}={v}" for k, v in shown.items()) or "none"
            )
        finally:
            bench.close()
    finally:
        env.close()

    results = bench.results
    rows = bench_report.build_rows(results, sizes)
    load_end = os.getloadavg()
    wall_seconds = time.monotonic() - wall
    print()
    print(bench_report.console_table(rows))
    print()
    print(
        "versions: "
        + ", ".join(
            f"{name} {facts[name]}"
            for name in ("celery", "kombu", "dramatiq", "procrastinate")
            if name in facts
        )
    )
    print(
        f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; "
        f"{headline_reps} repetition(s) for e2e and drain, {reps} for the others, median "
        f"shown; {wall_seconds:.0f} s in all"
    )
    markdown = args.markdown
    if markdown is None and not args.quick and (figures == list(FIGURES) or args.merge):
        markdown = ROOT / "BENCHMARKS.md"
    if markdown is not None:
        bench_report.write_markdown(
            markdown,
            bench_report.markdown(
                rows,
                results,
                facts,
                command,
                (headline_reps, reps),
                started_at,
                wall_seconds,
                load_start,
                load_end,
                merged=(
                    f"{', '.join(figures)} measured again in this run; every other figure "
                    f"comes from an earlier full run (`{args.merge}`), on the same machine"
                    if args.merge is not None
                    else ""
                ),
            ),
        )
        print(f"wrote {markdown}")
    if args.json is not None:
        payload = {"rows": [row.__dict__ for row in rows], **results.as_json(), "facts": facts}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0
