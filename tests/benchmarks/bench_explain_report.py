"""The BENCHMARKS.md section "Where the misses come from", from ``Results.profiles`` (taken by
:mod:`tests.benchmarks.bench_explain`). No aicmo import: the report's unit tests use it
without a database or a broker."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from tests.benchmarks.bench_results import Results

SAMPLE_HZ = 250
LADDER = (50.0, 100.0, 150.0)  # offered rates below the figure's 200/s
LADDER_SECONDS = 6.0
LATENCY_SLACK_MS = 10.0  # issue #18: p99 <= plain + 10 ms
TOP = 9  # packages shown per table; the rest are summed as "other"

# What a worker's processes import, in this order; each step's RSS growth is its cost.
IMPORT_STEPS: tuple[tuple[str, str], ...] = (
    ("Celery's worker (celery, kombu, billiard, redis-py)",
     "import celery.apps.worker, celery.worker.consumer, celery.concurrency.prefork, "
     "kombu.transport.redis, billiard.pool"),
    ("pydantic + pydantic-settings (aicmo's settings and payload models)",
     "import pydantic, pydantic_settings"),
    ("aicmo's app, as the main process holds it (`tasks`, beyond the above)", "import tasks"),
    ("SQLAlchemy Core (pool children)", "import sqlalchemy, sqlalchemy.dialects.postgresql"),
    ("psycopg (pool children)", "import psycopg"),
    ("aicmo's engine (`load_engine()` in a pool child, beyond the above)",
     "from tasks.actions import load_engine; load_engine()"),
    ("SQLAlchemy ORM (only once a handler uses ctx.session)",
     "import sqlalchemy.orm, aicmo.orchestration.models"),
)  # fmt: skip
PLAIN_STEP = ("the plain app (tests.benchmarks.plain_app)", "import tests.benchmarks.plain_app")
MAIN_STEPS = (1, 2)  # what aicmo's main process holds beyond Celery's
CHILD_STEPS = (1, 2, 3, 4, 5)  # what each pool child holds beyond Celery's (no ORM: no-op)


def split_cpu(samples: Counter[str], cpu_ms: float) -> dict[str, float]:
    """``cpu_ms`` per action shared out over packages in proportion to their samples."""
    total = sum(samples.values())
    if not total:
        return {}
    return {package: cpu_ms * n / total for package, n in samples.most_common()}


def render(results: Results, missed: list[str]) -> str:
    """The BENCHMARKS.md section (empty when the run took no profiles)."""
    profiles = results.profiles
    if not profiles:
        return ""
    parts = [
        "## Where the misses come from (profiles from this run)\n",
        (
            "Missed in this run: " + "; ".join(missed) + "."
            if missed
            else "Every target was met in this run; the profiles below show where the cost is."
        ),
        "Taken after the figures, on the same machine (`tests/benchmarks/bench_explain.py`).",
    ]
    for name, title, write in (
        ("worker_cpu", "Worker CPU per action, by package", _render_worker_cpu),
        ("latency_ladder", "Start latency by offered rate", _render_ladder),
        ("enqueue", "One enqueue, by package, and its floors", _render_enqueue),
        ("memory", "Worker memory, by import", lambda d: _render_memory(d, results)),
        ("embedded", "The embedded worker's CPU per action, by package", _render_embedded),
        ("fanout", "Beat's fan-out, by package", lambda d: _render_fanout(d, results)),
        ("sweeper", "The sweeper's statements at both sizes", _render_sweeper),
    ):
        data = profiles.get(name)
        if data is None:
            continue
        parts.append(f"### {title}\n")
        if isinstance(data, dict) and "error" in data:
            parts.append(f"Not measured: {data['error']}")
        else:
            parts.append(write(data))
    return "\n\n".join(parts) + "\n"


def _top(columns: list[dict[str, float]]) -> list[str]:
    """The packages with the most CPU over all columns, largest first."""
    total: Counter[str] = Counter()
    for column in columns:
        total.update(column)
    return [name for name, _ in total.most_common(TOP)]


def _package_table(headers: list[str], columns: list[dict[str, float]]) -> str:
    names = _top(columns)
    lines = [
        "| package (self time) | " + " | ".join(headers) + " |",
        "| --- |" + " ---: |" * len(headers),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{c.get(name, 0.0):.2f}" for c in columns) + " |")
    lines.append(
        "| other | "
        + " | ".join(f"{sum(v for k, v in c.items() if k not in names):.2f}" for c in columns)
        + " |"
    )
    lines.append(
        "| **total** | " + " | ".join(f"**{sum(c.values()):.2f}**" for c in columns) + " |"
    )
    return "\n".join(lines)


def _render_worker_cpu(data: dict[str, Any]) -> str:
    plain, aicmo = data["plain"], data["aicmo"]
    table = _package_table(
        ["plain main", "aicmo main", "plain children", "aicmo children"],
        [plain["main"], aicmo["main"], plain["pool"], aicmo["pool"]],
    )
    differences: Counter[str] = Counter()
    for role in ("main", "pool"):
        for name, ms in aicmo[role].items():
            differences[name] += ms
        for name, ms in plain[role].items():
            differences[name] -= ms
    extra = sum(aicmo["main"].values()) + sum(aicmo["pool"].values())
    extra -= sum(plain["main"].values()) + sum(plain["pool"].values())
    biggest = ", ".join(f"{name} {ms:+.2f} ms" for name, ms in differences.most_common(4))
    plain_total = plain["main_cpu_ms"] + plain["pool_cpu_ms"]
    aicmo_total = aicmo["main_cpu_ms"] + aicmo["pool_cpu_ms"]
    return (
        f"{data['aicmo']['count']:,} no-op actions one by one, as in the e2e figure, each worker "
        f"sampled by py-spy at {SAMPLE_HZ} Hz with `--gil`; each role's psutil CPU per action "
        "(ms) is split over the packages in proportion to its samples.\n\n"
        f"{table}\n\n"
        f"aicmo's worker spends {aicmo_total:.2f} ms of CPU per action, plain's {plain_total:.2f}"
        f" ms ({extra:+.2f} ms). The largest differences: {biggest}. On 2 cores that CPU alone "
        f"caps a worker at {2000 / aicmo_total:,.0f} actions/s (plain: {2000 / plain_total:,.0f}"
        "/s) before the producer, PostgreSQL and Redis take their share: the e2e and drain "
        "ratios and the latency figure at 200/s follow from it."
    )


def _render_ladder(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| offered | plain p50 | plain p99 | aicmo p50 | aicmo p99 | aicmo p99 - plain p99 | "
        f"within +{LATENCY_SLACK_MS:.0f} ms? |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    holds = []
    for row in rows:
        plain, aicmo = row["plain"], row["aicmo"]
        delta = aicmo["p99_ms"] - plain["p99_ms"]
        ok = delta <= LATENCY_SLACK_MS
        if ok:
            holds.append(row["rate"])
        sent = (
            ""
            if aicmo["sent_per_s"] >= 0.95 * row["rate"]
            else f" (sent {aicmo['sent_per_s']:.0f}/s)"
        )
        lines.append(
            f"| {row['rate']:.0f}/s{sent} | {plain['p50_ms']:.1f} ms | {plain['p99_ms']:.1f} ms | "
            f"{aicmo['p50_ms']:.1f} ms | {aicmo['p99_ms']:.1f} ms | {delta:+.1f} ms | "
            f"{'yes' if ok else '**no**'} |"
        )
    verdict = (
        f"Here aicmo's p99 stays within plain's + {LATENCY_SLACK_MS:.0f} ms up to "
        f"{max(holds):.0f}/s"
        if holds
        else f"Here aicmo's p99 exceeds plain's + {LATENCY_SLACK_MS:.0f} ms at every rate tried"
    )
    return (
        f"The latency figure again, {LADDER_SECONDS:.0f} s per rate, same worker and producer, "
        "on the machine as it was during this run (see the load column above).\n\n"
        + "\n".join(lines)
        + f"\n\n{verdict}. Where it does not hold, the worker's CPU per action (above) leaves "
        "too little headroom on 2 cores shared with the producer, PostgreSQL and Redis, and "
        "messages wait in the queue."
    )


def _render_enqueue(data: dict[str, Any]) -> str:
    names = list(data["by_package_ms"])[:TOP]
    rest = sum(v for k, v in data["by_package_ms"].items() if k not in names)
    lines = ["| where the caller's time goes (wall clock) | ms per enqueue |", "| --- | ---: |"]
    lines += [f"| {name} | {data['by_package_ms'][name]:.3f} |" for name in names]
    lines += [f"| other | {rest:.3f} |", f"| **total** | **{data['aicmo_ms']:.3f}** |"]
    durable, push, plain = data["durable_commit_ms"], data["redis_push_ms"], data["plain_ms"]
    floor = durable + push
    return (
        f"{data['count']:,} calls of the task's `.delay` (one INSERT committed by itself, then "
        "the message), profiled by pyinstrument (wall clock: waits on PostgreSQL and Redis show "
        "under psycopg and redis-py); its shares are scaled to the same calls timed without "
        f"the profiler ({data['profiled_ms']:.3f} ms a call under it).\n\n"
        + "\n".join(lines)
        + "\n\n| floor, measured now | ms per call |\n| --- | ---: |\n"
        "| one-row INSERT committed by itself, waiting for the WAL flush (psycopg) | "
        f"{durable:.3f} |\n"
        f"| the same with `synchronous_commit = off` | {data['no_flush_commit_ms']:.3f} |\n"
        f"| one LPUSH of a 1 KB message (redis-py) | {push:.3f} |\n"
        f"| plain Celery's `apply_async` | {plain:.3f} |\n\n"
        f"A durable enqueue cannot cost less than a committed row plus a publish: {floor:.3f} ms "
        f"here, so 0.5x plain's `apply_async` ({plain:.3f} ms) needs an enqueue of "
        f"{2 * plain:.3f} ms or less (aicmo's: {data['aicmo_ms']:.3f} ms, "
        f"{plain / data['aicmo_ms']:.2f}x); the floor alone allows at most {plain / floor:.2f}x. "
        f"The commit's WAL flush is {durable - data['no_flush_commit_ms']:.3f} ms of it: plain "
        "Celery's publish writes nothing to disk before it returns; aicmo's row is what makes "
        "the action durable and its key unique. For many actions, `enqueue_many` shares one "
        "commit (the bulk rows above)."
    )


def _render_memory(data: dict[str, Any], results: Results) -> str:
    steps, mib = data["steps"], data["mib"]
    lines = ["| import step (a fresh interpreter, in this order) | RSS growth |", "| --- | ---: |"]
    lines += [f"| {label} | {value:.1f} MiB |" for label, value in zip(steps, mib, strict=True)]
    lines.append(
        f"| plain: {PLAIN_STEP[0]}, after Celery's worker | {data['plain_app_mib']:.1f} MiB |"
    )
    main_extra = sum(mib[i] for i in MAIN_STEPS)
    child_extra = sum(mib[i] for i in CHILD_STEPS)
    text = "\n".join(lines) + (
        f"\n\nBeyond Celery's own, aicmo's main process imports {main_extra:.1f} MiB "
        f"(pydantic {mib[1]:.1f}, aicmo's app {mib[2]:.1f}) and each pool child "
        f"{child_extra:.1f} MiB (the same, plus SQLAlchemy Core {mib[3]:.1f}, psycopg {mib[4]:.1f}"
        f", the engine {mib[5]:.1f}; a forked child's RSS counts what it shares with its parent)"
        f": {main_extra + 2 * child_extra:.1f} MiB for a worker with 2 children, against "
        f"{3 * data['plain_app_mib']:.1f} MiB for the plain app's module."
    )
    rss_plain = results.get("e2e", "plain", "rss")
    rss_aicmo = results.get("e2e", "aicmo", "rss")
    if rss_plain and rss_aicmo:
        plain, aicmo = statistics.median(rss_plain), statistics.median(rss_aicmo)
        cut = aicmo - 1.3 * plain
        text += (
            f" Measured after the e2e figure: plain {plain:.0f} MiB, aicmo {aicmo:.0f} MiB "
            f"({aicmo / plain:.2f}x); 1.3x would need {max(0.0, cut):.0f} MiB less. "
            f"Without SQLAlchemy Core in the children (a store on psycopg and sqlite3 alone) "
            f"the imports would be {2 * mib[3]:.0f} MiB lighter, "
            f"{(aicmo - 2 * mib[3]) / plain:.2f}x; without pydantic too, "
            f"{(aicmo - 2 * mib[3] - 3 * mib[1]) / plain:.2f}x."
        )
    return text


def _render_embedded(data: dict[str, Any]) -> str:
    table = _package_table(["main process", "pool children"], [data["main"], data["pool"]])
    total = data["main_cpu_ms"] + data["pool_cpu_ms"]
    return (
        f"{data['count']:,} no-op actions on SQLite and kombu's filesystem transport at "
        f"{data['rate']:,.0f}/s (producer {data['enqueue_rate']:,.0f}/s, a separate process), "
        f"sampled as the workers above; ms of CPU per action.\n\n{table}\n\n"
        f"{total:.2f} ms of worker CPU per action caps it at {2000 / total:,.0f}/s on 2 cores "
        f"before the producer's share. Most of it: in the main process {_leaders(data['main'])}"
        f"; in the pool children {_leaders(data['pool'])}."
    )


def _leaders(column: dict[str, float], count: int = 3) -> str:
    ranked = sorted(column.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{name} {ms:.2f} ms" for name, ms in ranked) or "nothing sampled"


def _render_fanout(data: dict[str, Any], results: Results | None = None) -> str:
    measured = results.get("fanout", "aicmo", "seconds") if results is not None else []
    unprofiled = statistics.median(measured) if measured else data["seconds"]
    scale = unprofiled / data["seconds"] if data["seconds"] else 1.0
    shares = {name: value * scale for name, value in data["by_package_s"].items()}
    names = list(shares)[:TOP]
    rest = sum(v for k, v in shares.items() if k not in names)
    lines = ["| package (self time, wall clock) | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {shares[name]:.2f} |" for name in names]
    lines += [f"| other | {rest:.2f} |", f"| **total** | **{unprofiled:.2f}** |"]
    campaigns, cpu = data["campaigns"], data["cpu_seconds"]
    return (
        f"One `schedule_ticks` over {campaigns:,} due campaigns (its commit publishes the "
        f"ticks), profiled by pyinstrument ({data['seconds']:.2f} s under it), shares scaled to "
        "the figure's own median above.\n\n"
        + "\n".join(lines)
        + f"\n\nUnder the profiler {data['seconds']:.2f} s, {cpu:.2f} s of it this process's CPU "
        f"({cpu / campaigns * 1000:.3f} ms per campaign): "
        + (
            "the fan-out is bound by this process's CPU"
            if cpu >= 0.7 * data["seconds"]
            else "most of it waits on PostgreSQL and Redis"
        )
        + f"; the largest shares: {_leaders(shares, 3).replace(' ms', ' s')}."
    )


def _render_sweeper(data: dict[str, dict[str, float]]) -> str:
    sizes = list(data)
    statements = sorted(
        {name for size in sizes for name in data[size]},
        key=lambda name: -max(data[size].get(name, 0.0) for size in sizes),
    )
    lines = [
        "| statement (first 90 characters) | " + " | ".join(f"{s} rows" for s in sizes) + " |",
        "| --- |" + " ---: |" * len(sizes),
    ]
    for name in statements[:TOP]:
        cells = " | ".join(f"{data[size].get(name, 0.0):.1f} ms" for size in sizes)
        lines.append(f"| `{name}` | {cells} |")
    totals = [sum(data[size].values()) for size in sizes]
    lines.append("| **total** | " + " | ".join(f"**{t:.1f} ms**" for t in totals) + " |")
    text = (
        "The database-only sweep of the last repetition at each size, each statement timed "
        "from the client (round trip and PostgreSQL's work).\n\n" + "\n".join(lines)
    )
    if len(sizes) == 2 and statements:
        grew = max(statements, key=lambda n: data[sizes[1]].get(n, 0) - data[sizes[0]].get(n, 0))
        delta = data[sizes[1]].get(grew, 0.0) - data[sizes[0]].get(grew, 0.0)
        text += (
            f"\n\nFrom {sizes[0]} to {sizes[1]} rows the statements took "
            f"{totals[1] - totals[0]:+.1f} ms in all; the one that grew most ({delta:+.1f} ms) "
            f"is `{grew}`."
        )
    return text
