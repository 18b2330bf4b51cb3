"""The table (figure, plain, aicmo, ratio, target, met?) and BENCHMARKS.md."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.benchmarks.bench_figures import Results, Sizes
from tests.support.processes import ROOT

NA = "—"


@dataclass
class Row:
    figure: str
    plain: str
    aicmo: str
    ratio: str
    target: str
    met: str


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rate(value: float | None) -> str:
    return NA if value is None else f"{value:,.0f}/s"


def _ms(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _mib(value: float | None) -> str:
    return NA if value is None else f"{value:.0f} MiB"


def _yes(ok: bool | None) -> str:
    return NA if ok is None else ("yes" if ok else "**no**")


def _ratio(aicmo: float | None, plain: float | None) -> float | None:
    if aicmo is None or plain is None or plain == 0 or math.isnan(plain):
        return None
    return aicmo / plain


def _x(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def build_rows(results: Results, sizes: Sizes) -> list[Row]:
    def m(figure: str, kind: str, metric: str) -> float | None:
        return median(results.get(figure, kind, metric))

    rows: list[Row] = []

    def throughput(
        figure: str,
        label: str,
        target: float | None,
        kind: str = "plain",
        note: str = "",
        aicmo_kind: str = "aicmo",
    ) -> None:
        plain, aicmo = m(figure, kind, "rate"), m(figure, aicmo_kind, "rate")
        missing = plain is None or aicmo is None
        if (plain is None and aicmo is None) or (target is None and missing):
            return
        ratio = _ratio(aicmo, plain)
        rows.append(
            Row(
                label,
                _rate(plain),
                _rate(aicmo),
                _x(ratio),
                f">= {target}x plain" if target else note or "context",
                _yes(None if target is None or ratio is None else ratio >= target),
            )
        )

    throughput("e2e", f"end-to-end throughput ({sizes.e2e:,} no-op)", 0.7)
    throughput("e2e", "  context: plain with task events off", None, "plain-noevents")
    throughput(
        "e2e",
        "  context: plain + 1 small PG transaction per task",
        None,
        "plain-pg",
        "context (anchor ~440/s)",
    )
    throughput(
        "e2e",
        "  context: aicmo producer in batches of 100 (enqueue_many)",
        None,
        aicmo_kind="aicmo-batch",
    )
    throughput("drain", f"drain throughput ({sizes.drain:,} queued)", 0.7)
    throughput("drain", "  context: plain with task events off", None, "plain-noevents")
    for metric, label in (("main_cpu_ms", "main process"), ("pool_cpu_ms", "pool children")):
        plain, aicmo = m("e2e", "plain", metric), m("e2e", "aicmo", metric)
        if plain is not None and aicmo is not None:
            rows.append(
                Row(
                    f"  context: worker CPU per action, {label} (e2e)",
                    _ms(plain),
                    _ms(aicmo),
                    _x(_ratio(aicmo, plain)),
                    "context",
                    NA,
                )
            )
    throughput("enqueue_one", f"enqueue, one by one ({sizes.enqueue_one:,})", 0.5)
    throughput("enqueue_bulk", f"enqueue, bulk ({sizes.enqueue_bulk:,} in one call)", 2.0)

    rate = f"{sizes.latency_rate:.0f}/s"
    for metric, label, slack in (("p50_ms", "p50", 3.0), ("p99_ms", "p99", 10.0)):
        plain, aicmo = m("latency", "plain", metric), m("latency", "aicmo", metric)
        if plain is None and aicmo is None:
            continue
        diff = None if plain is None or aicmo is None else aicmo - plain
        reached = [m("latency", kind, "sent_per_s") for kind in ("plain", "aicmo")]
        short = [
            f"{kind} sent {value:,.0f}/s"
            for kind, value in zip(("plain", "aicmo"), reached, strict=True)
            if value is not None and value < 0.9 * sizes.latency_rate
        ]
        rows.append(
            Row(
                f"start latency {label}, {rate}" + (f" ({'; '.join(short)})" if short else ""),
                _ms(plain),
                _ms(aicmo),
                NA if diff is None else f"{diff:+.1f} ms",
                f"<= plain + {slack:.0f} ms",
                _yes(None if diff is None else diff <= slack),
            )
        )

    small, large = m("sweeper_small", "aicmo", "ms"), m("sweeper_large", "aicmo", "ms")
    if small is not None or large is not None:
        rows.append(
            Row(
                f"sweeper, {sizes.sweep_small:,} terminal + {sizes.sweep_due:,} due rows",
                NA,
                _ms(small),
                NA,
                "(the 1.5x baseline)",
                NA,
            )
        )
        growth = _ratio(large, small)
        ok = None if large is None or growth is None else large <= 100.0 and growth <= 1.5
        rows.append(
            Row(
                f"sweeper, {sizes.sweep_large:,} terminal + {sizes.sweep_due:,} due rows",
                NA,
                _ms(large),
                f"{_x(growth)} of {sizes.sweep_small:,}",
                "<= 100 ms and <= 1.5x",
                _yes(ok),
            )
        )
        db_large = m("sweeper_large", "aicmo", "db_only_ms")
        if db_large is not None:
            rows.append(
                Row(
                    "  context: the same sweep, database share only",
                    NA,
                    _ms(db_large),
                    NA,
                    "context",
                    NA,
                )
            )

    for figure, reason in results.not_measured.items():
        if figure != "fanout":
            rows.append(Row(figure, NA, f"not measured: {reason[:200]}", NA, NA, NA))

    fanout_label = f"beat fan-out, {sizes.campaigns:,} ACTIVE campaigns due"
    if "fanout" in results.not_measured:
        rows.append(
            Row(
                fanout_label,
                NA,
                f"not measured: {results.not_measured['fanout']}",
                NA,
                "<= 3 s",
                NA,
            )
        )
    else:
        seconds = m("fanout", "aicmo", "seconds")
        if seconds is not None:
            rows.append(
                Row(fanout_label, NA, f"{seconds:.2f} s", NA, "<= 3 s", _yes(seconds <= 3.0))
            )

    plain_mem, aicmo_mem = m("e2e", "plain", "rss"), m("e2e", "aicmo", "rss")
    if plain_mem is not None or aicmo_mem is not None:
        ratio = _ratio(aicmo_mem, plain_mem)
        rows.append(
            Row(
                f"worker memory after {sizes.e2e:,} (RSS, main + 2 children)",
                _mib(plain_mem),
                _mib(aicmo_mem),
                _x(ratio),
                "<= 1.3x plain",
                _yes(None if ratio is None else ratio <= 1.3),
            )
        )

    embedded = m("embedded", "aicmo", "rate")
    if embedded is not None:
        rows.append(
            Row(
                f"embedded default, e2e {sizes.embedded:,} (SQLite + file transport)",
                NA,
                _rate(embedded),
                NA,
                ">= 100/s (sanity)",
                _yes(embedded >= 100),
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    header = Row("figure", "plain", "aicmo", "ratio", "target", "met?")
    lines = [header, Row(*["---"] * 6), *rows]
    return "\n".join(
        "| " + " | ".join([r.figure, r.plain, r.aicmo, r.ratio, r.target, r.met]) + " |"
        for r in lines
    )


def console_table(rows: list[Row]) -> str:
    header = Row("figure", "plain", "aicmo", "ratio", "target", "met?")
    cells = [
        [r.figure, r.plain, r.aicmo, r.ratio, r.target, r.met.replace("*", "")]
        for r in [header, *rows]
    ]
    widths = [min(70, max(len(row[i]) for row in cells)) for i in range(6)]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(cell[: widths[i]].ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def details(results: Results) -> str:
    """Every repetition's value of every metric, so the noise is visible."""
    lines = []
    for figure, sides in results.values.items():
        load = results.load.get(figure.split("_")[0] if figure.startswith("sweeper") else figure)
        extra = f" (load average after: {load[0]:.2f})" if load else ""
        lines.append(f"- **{figure}**{extra}")
        for kind, metrics in sides.items():
            parts = []
            for name, values in metrics.items():
                shown = ", ".join(_short(v) for v in values)
                parts.append(f"{name} [{shown}]")
            lines.append(f"  - {kind}: " + "; ".join(parts))
    for figure, notes in results.notes.items():
        for note in notes:
            lines.append(f"- {figure}: {note}")
    return "\n".join(lines)


def _short(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts(pg: Any, redis_client: Any) -> dict[str, str]:
    import celery
    import kombu
    import psycopg
    import redis
    import sqlalchemy

    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    row = pg.execute("SHOW server_version").fetchone()
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cores": f"{os.cpu_count()} ({cpu})" if cpu else str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis.__version__,
        "redis server": str(redis_client.info("server").get("redis_version", "?")),
        "postgresql": str(row[0]) if row else "?",
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "code": f"{commit}{' + uncommitted changes' if dirty else ''}",
    }


METHOD = """\
- **Same run, same settings.** Both sides run in this one process's run against the same
  PostgreSQL and Redis, each with a fresh `celery worker -P prefork -c 2` started for each
  repetition, with the settings of `tasks/config.py`: `acks_late`, `reject_on_worker_lost`,
  prefetch multiplier 1, JSON, no result backend, task events on (`worker_send_task_events`
  and `task_send_sent_event`, which Flower needs), log level INFO to a file,
  `--without-mingle --without-gossip`. The plain app is `tests/benchmarks/plain_app.py`.
  The order of the sides alternates from one repetition to the next; each figure is the
  median of the repetitions (every value is listed under "Every repetition").
- **Counting plain Celery honestly.** A plain task has no row to look at, so each plain task
  ends with one pipelined Redis round trip (`INCR` a counter, `SET` its finish time), and each
  pool process records the start of its first task once. That is a little work aicmo does not
  do (it writes its SUCCESS row anyway, and the harness reads `started_at_utc` and
  `finished_at_utc` from it), so plain is, if anything, slightly understated.
- **End to end**: a fresh worker consumes while this process enqueues N no-op actions one by
  one (`enqueue_action` in its own transaction, the message sent after commit; plain:
  `apply_async`); the clock runs from just before the first enqueue to the last completion
  (aicmo: `max(finished_at_utc)` of the SUCCESS rows). The producer shares the 2 cores with the
  worker; `enqueue_rate` in the details tells whether the producer or the worker was the
  bottleneck. Worker memory is read (psutil RSS of the main process plus its 2 pool children;
  USS too) from the same workers right after the last completion. The workers' CPU time per
  action (psutil user + system time over the run, of the main process and of the pool
  children) is shown as context: it moves less with the machine's load than the rates do.
  The "producer in batches" row enqueues with `enqueue_many` 100 at a time, so the worker,
  not the one-by-one producer, sets the pace.
- **Drain**: N messages queued first (aicmo: one `enqueue_many`; plain: `apply_async` loop),
  then the worker starts. Worker boot is excluded the same way for both: the clock starts at
  the first task's start (aicmo: `min(started_at_utc)`, set as the claim begins; plain: the
  first task's first line) and ends at the last completion. `rate_from_ready` (from the
  worker's "ready" log line, seen within 50 ms) is listed for reference.
- **Enqueue**: no worker running; 20 warm-up calls, then N timed calls. `cpu_ms_each` is the
  caller's CPU time per action. Bulk: one `enqueue_many` of N items in one transaction, whose
  commit publishes the N messages, vs `apply_async` N times.
- **Start latency**: a paced producer at 200/s (from one thread; `max_send_lag_ms` and
  `sent_per_s` show whether it kept up: when one enqueue takes longer than 5 ms it cannot, the
  label says so, and the figure is then no longer "light load"), after 20 warm-up tasks.
  aicmo: from just before `session.commit()` (which commits and then publishes) to the
  handler's first line (`BENCH_STAMP` returns `time.time()`, stored in `result_json` with the
  SUCCESS row); plain: from just before `apply_async` to the task's first line. Percentiles
  are nearest-rank over all samples of a repetition.
- **Sweeper**: terminal rows (SUCCESS/FAILED/DLQ/CANCELLED, 30 days old) inserted with
  `INSERT .. SELECT generate_series`, then `VACUUM ANALYZE`; due rows are PENDING with
  `not_before` one second ago and no message. One `Sweeper().sweep()` with the real Celery
  dispatcher (so it publishes the due messages to Redis), after a warm-up sweep; the due rows
  are reset before each repetition. The "database share" row repeats it with a recording
  dispatcher, which publishes nothing.
- **Embedded**: the end-to-end figure on a fresh SQLite file and kombu's filesystem transport
  in a temporary folder; the producer is a separate process (aicmo's settings are per process).
- **Caveats.** RSS counts the pages a forked pool child shares with its parent once per
  process (the USS in the details does not). The sweeper figure includes publishing the due
  messages to Redis (the "database share" row leaves that out). The e2e producer runs in the
  harness process and competes with the worker for the 2 cores, on both sides alike. The
  fan-out figure times `aicmo.cam.schedule.schedule_ticks` in one transaction, commit and
  publish included, over campaigns copied in SQL from one made by `create_campaign`.
- **Noise.** The machine has 2 cores and other work may run on it; the load average is
  printed. Ratios from one run are the figures to trust; absolute rates move with the load.
  Timed figures are never pass/fail tests: `tests/integration/test_bench_smoke.py` only checks
  that the harness runs and produces numbers.
"""


def markdown(
    rows: list[Row],
    results: Results,
    facts: dict[str, str],
    command: str,
    reps: int,
    started: datetime,
    wall_seconds: float,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> str:
    fact_lines = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    return f"""# Benchmarks: aicmo against plain Celery

Measured {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC by `{command}` ({reps} repetitions per
figure, median shown; the whole run took {wall_seconds / 60:.1f} min). Load average
(1/5/15 min) at the start {_load(load_start)}, at the end {_load(load_end)}.

Reproduce with `make bench` (the same as `{command}`); `python -m tests.benchmarks --help`
lists the options (`--quick`, `--only FIGURE`, `--reps N`, `--profile`). It needs PostgreSQL
and Redis on localhost, like `make test` (`AICMO_TEST_PG_ADMIN`, `AICMO_TEST_REDIS`).

{table(rows)}

## Machine

| | |
|---|---|
{fact_lines}

## Method

{METHOD}
## Every repetition

{details(results)}
"""


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in load)


def write_markdown(path: os.PathLike[str], text: str) -> None:
    with open(path, "w") as out:
        out.write(text)
