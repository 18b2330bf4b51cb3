"""The table (figure, plain, aicmo, ratio, target, met?) and BENCHMARKS.md."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from tests.benchmarks.bench_results import Results, Sizes
from tests.support.processes import ROOT

NA = "—"


LOAD_LIMIT = 1.0  # a figure whose 1-minute load average was above this before a run is "busy"
HEADLINE = {"plain": "plain, aicmo's settings", "plain-noevents": "plain, Celery's default events"}


@dataclass
class Row:
    figure: str
    plain: str
    aicmo: str
    ratio: str
    target: str
    met: str
    dramatiq: str = NA
    procrastinate: str = NA
    load: str = NA

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "figure",
        "plain",
        "aicmo",
        "ratio",
        "Dramatiq",
        "Procrastinate",
        "target",
        "met?",
        "load before",
    )

    def cells(self) -> list[str]:
        return [
            self.figure,
            self.plain,
            self.aicmo,
            self.ratio,
            self.dramatiq,
            self.procrastinate,
            self.target,
            self.met,
            self.load,
        ]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class RatioStat:
    """The median of per-repetition ratios and their range."""

    median: float
    low: float
    high: float
    pairs: int


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """``numerator[i] / denominator[i]`` for each repetition ``i`` both sides have: each
    repetition ran the two sides back to back, so a burst of load hits both of a pair."""
    out = []
    for top, bottom in zip(numerator, denominator, strict=False):
        if bottom and math.isfinite(bottom) and math.isfinite(top):
            out.append(top / bottom)
    return out


def ratio_stat(numerator: list[float], denominator: list[float]) -> RatioStat | None:
    ratios = paired_ratios(numerator, denominator)
    if not ratios:
        return None
    return RatioStat(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


def _ratio_text(stat: RatioStat | None) -> str:
    if stat is None:
        return NA
    if stat.pairs == 1:
        return f"{stat.median:.2f}x"
    return f"{stat.median:.2f}x ({stat.low:.2f}-{stat.high:.2f}, {stat.pairs} pairs)"


def load_before(results: Results, figure: str, kinds: tuple[str, ...]) -> float | None:
    """The highest 1-minute load average seen just before the figure or any of its runs of
    ``kinds`` started."""
    seen = [value for kind in kinds for value in results.get(figure, kind, "load1_before")]
    start = results.load_before.get(
        figure.split("_")[0] if figure.startswith("sweeper") else figure
    )
    if start is not None:
        seen.append(start[0])
    return max(seen) if seen else None


def others_before(results: Results, figure: str, kinds: tuple[str, ...]) -> float | None:
    """The most cores other processes kept busy just before one of the runs (None: not
    sampled)."""
    seen = [
        value
        for kind in kinds
        for value in results.get(figure, kind, "others_cores_before")
        if math.isfinite(value)
    ]
    return max(seen) if seen else None


def load_mark(value: float | None, others: float | None = None) -> str:
    """``0.42`` on a quiet machine, ``**2.31 busy**`` above :data:`LOAD_LIMIT`; with the most
    cores other processes used just before a run when it was sampled (the load average also
    counts the benchmark's own previous minute, and others' past minute)."""
    if value is None:
        return NA
    shown = f"{value:.2f}" if value <= LOAD_LIMIT else f"**{value:.2f} busy**"
    return shown if others is None else f"{shown} (others {others:.2f} cores just before)"


def over_capacity(offered: float, capacity: float | None) -> bool:
    """A latency figure measured above the side's capacity measures a growing backlog."""
    return capacity is not None and offered > capacity


def fell_behind(sent: float, served: float | None) -> bool:
    """The handlers started more slowly than the actions were sent (5% slack for the ends of
    the run): the worker was over its capacity during the latency run itself."""
    return served is not None and math.isfinite(served) and served < 0.95 * sent


def _rate(value: float | None) -> str:
    return NA if value is None else f"{value:,.0f}/s"


def _ms(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _mib(value: float | None) -> str:
    return NA if value is None else f"{value:.0f} MiB"


def bulk_row(rows: list[Row], results: Results, sizes: Sizes, load: Any) -> None:
    """Issue #18's goal: bulk end-to-end (one ``enqueue_many``, batched messages) at 2x or
    more plain Celery's per-task rate and above Dramatiq with one PostgreSQL write per job,
    both from the same run."""
    bulk, plain = results.get("e2e", "aicmo-bulk", "rate"), results.get("e2e", "plain", "rate")
    if not bulk:
        return
    stat = ratio_stat(bulk, plain)
    dramatiq_pg = results.get("e2e", "dramatiq-pg", "rate")
    beats = None if not dramatiq_pg else statistics.median(bulk) > statistics.median(dramatiq_pg)
    met = None if stat is None else stat.median >= 2.0 and beats is not False
    row = Row(
        f"bulk end-to-end ({sizes.bulk:,} no-op in one enqueue_many, batched), "
        f"vs {HEADLINE['plain']} per task",
        _rate(statistics.median(plain) if plain else None),
        _rate(statistics.median(bulk)),
        _ratio_text(stat),
        ">= 2.0x plain, > Dramatiq + PG" if dramatiq_pg else ">= 2.0x plain (Dramatiq + PG: -)",
        _yes(met),
        load=load("e2e", "plain", "aicmo-bulk", "dramatiq-pg"),
    )
    row.dramatiq = _rate(statistics.median(dramatiq_pg) if dramatiq_pg else None)
    procrastinate_pg = results.get("e2e", "procrastinate-pg", "rate")
    row.procrastinate = _rate(statistics.median(procrastinate_pg) if procrastinate_pg else None)
    rows.append(row)


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

    def load(figure: str, *kinds: str) -> str:
        return load_mark(load_before(results, figure, kinds), others_before(results, figure, kinds))

    rows: list[Row] = []

    def throughput(
        figure: str,
        label: str,
        target: float | None,
        kind: str = "plain",
        note: str = "",
        aicmo_kind: str = "aicmo",
        references: tuple[str, str] | None = None,
    ) -> None:
        plain, aicmo = m(figure, kind, "rate"), m(figure, aicmo_kind, "rate")
        missing = plain is None or aicmo is None
        if (plain is None and aicmo is None) or (target is None and missing):
            return
        stat = ratio_stat(
            results.get(figure, aicmo_kind, "rate"), results.get(figure, kind, "rate")
        )
        row = Row(
            label,
            _rate(plain),
            _rate(aicmo),
            _ratio_text(stat),
            f">= {target}x plain" if target else note or "context",
            _yes(None if target is None or stat is None else stat.median >= target),
            load=load(figure, kind, aicmo_kind, *(references or ())),
        )
        if references is not None:
            row.dramatiq = _rate(m(figure, references[0], "rate"))
            row.procrastinate = _rate(m(figure, references[1], "rate"))
        rows.append(row)

    throughput(
        "e2e",
        f"end-to-end throughput ({sizes.e2e:,} no-op), vs {HEADLINE['plain']}",
        0.7,
        references=("dramatiq", "procrastinate"),
    )
    throughput("e2e", f"  the same, vs {HEADLINE['plain-noevents']}", 0.7, "plain-noevents")
    bulk_row(rows, results, sizes, load)
    throughput(
        "e2e",
        "  context: one PostgreSQL state row per job (INSERT .. ON CONFLICT + UPDATE)",
        None,
        "plain-pg",
        references=("dramatiq-pg", "procrastinate-pg"),
    )
    throughput(
        "e2e",
        "  context: aicmo producer in calls of 100 (enqueue_many: one batch message each)",
        None,
        aicmo_kind="aicmo-batch",
    )
    throughput("drain", f"drain throughput ({sizes.drain:,} queued), vs {HEADLINE['plain']}", 0.7)
    throughput("drain", f"  the same, vs {HEADLINE['plain-noevents']}", 0.7, "plain-noevents")
    for metric, label in (("main_cpu_ms", "main process"), ("pool_cpu_ms", "pool children")):
        plain, aicmo = m("e2e", "plain", metric), m("e2e", "aicmo", metric)
        if plain is not None and aicmo is not None:
            stat = ratio_stat(
                results.get("e2e", "aicmo", metric), results.get("e2e", "plain", metric)
            )
            rows.append(
                Row(
                    f"  context: worker CPU per action, {label} (e2e)",
                    _ms(plain),
                    _ms(aicmo),
                    _ratio_text(stat),
                    "context",
                    NA,
                    _ms(m("e2e", "dramatiq", metric)),
                    _ms(m("e2e", "procrastinate", metric)),
                    load("e2e", "plain", "aicmo"),
                )
            )
    throughput("enqueue_one", f"enqueue, one by one ({sizes.enqueue_one:,}; `.delay`)", 0.5)
    throughput(
        "enqueue_one",
        "  context: `enqueue_action` in the caller's transaction, and its commit",
        None,
        aicmo_kind="aicmo-outbox",
    )
    throughput("enqueue_bulk", f"enqueue, bulk ({sizes.enqueue_bulk:,} in one call)", 2.0)

    rate = f"{sizes.latency_rate:.0f}/s"
    capacity = {
        kind: m("drain", kind, "rate") or m("e2e", kind, "rate") for kind in ("plain", "aicmo")
    }
    for metric, label, slack in (("p50_ms", "p50", 3.0), ("p99_ms", "p99", 10.0)):
        plain, aicmo = m("latency", "plain", metric), m("latency", "aicmo", metric)
        if plain is None and aicmo is None:
            continue
        diff = None if plain is None or aicmo is None else aicmo - plain
        flags = [] if any(capacity.values()) else ["capacity not measured: add drain or e2e"]
        for kind in ("plain", "aicmo"):
            sent = m("latency", kind, "sent_per_s")
            if sent is not None and sent < 0.9 * sizes.latency_rate:
                flags.append(f"{kind} sent {sent:,.0f}/s")
            if over_capacity(sizes.latency_rate, capacity[kind]):
                flags.append(
                    f"**{rate} is over {kind}'s measured capacity {capacity[kind]:,.0f}/s**"
                )
            served = m("latency", kind, "served_per_s")
            if sent is not None and fell_behind(sent, served):
                flags.append(f"**{kind} fell behind: served {served:,.0f}/s of {sent:,.0f}/s**")
        rows.append(
            Row(
                f"start latency {label}, {rate}" + (f" ({'; '.join(flags)})" if flags else ""),
                _ms(plain),
                _ms(aicmo),
                NA if diff is None else f"{diff:+.1f} ms",
                f"<= plain + {slack:.0f} ms",
                _yes(None if diff is None else diff <= slack),
                load=load("latency", "plain", "aicmo"),
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
                load=load("sweeper_small", "aicmo"),
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
                load=load("sweeper_large", "aicmo"),
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
                    load=load("sweeper_large", "aicmo"),
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
                Row(
                    fanout_label,
                    NA,
                    f"{seconds:.2f} s",
                    NA,
                    "<= 3 s",
                    _yes(seconds <= 3.0),
                    load=load("fanout", "aicmo"),
                )
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
                _mib(m("e2e", "dramatiq", "rss")),
                _mib(m("e2e", "procrastinate", "rss")),
                load("e2e", "plain", "aicmo"),
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
                ">= 150/s",
                _yes(embedded >= 150),
                load=load("embedded", "aicmo"),
            )
        )
    return rows


# (metric, unit) of the CPU table: whose CPU it is and per what.
CPU_METRICS = {
    "enqueue_one": ("cpu_ms_each", None, "caller, per action"),
    "enqueue_bulk": ("cpu_ms_each", None, "caller, per action"),
    "sweeper_small": ("main_cpu_ms", None, "sweeping process, per sweep"),
    "sweeper_large": ("main_cpu_ms", None, "sweeping process, per sweep"),
    "fanout": ("main_cpu_ms", None, "calling process, per tick"),
}
WORKER_CPU = ("main_cpu_ms", "pool_cpu_ms", "worker, per action")


def cpu_rows(results: Results) -> list[list[str]]:
    """Per figure and side: CPU per action of the main process and of its children, and the
    highest 1-minute load average seen before one of its runs."""
    out = []
    for figure, sides in results.values.items():
        main_metric, child_metric, unit = CPU_METRICS.get(figure, WORKER_CPU)
        for kind, metrics in sides.items():
            main = median(metrics.get(main_metric, []))
            child = median(metrics.get(child_metric, [])) if child_metric else None
            if main is None and child is None:
                continue
            out.append(
                [
                    figure,
                    kind,
                    unit,
                    _ms(main),
                    _ms(child),
                    load_mark(
                        load_before(results, figure, (kind,)),
                        others_before(results, figure, (kind,)),
                    ),
                ]
            )
    return out


def cpu_table(results: Results) -> str:
    header = ["figure", "side", "whose CPU", "main process", "children", "load before"]
    lines = [header, ["---"] * len(header), *cpu_rows(results)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def table(rows: list[Row]) -> str:
    lines = [list(Row.COLUMNS), ["---"] * len(Row.COLUMNS), *(r.cells() for r in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def console_table(rows: list[Row]) -> str:
    cells = [list(Row.COLUMNS), *([c.replace("*", "") for c in r.cells()] for r in rows)]
    widths = [min(60, max(len(row[i]) for row in cells)) for i in range(len(Row.COLUMNS))]
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
- **Same run, same settings, from one source.** Every side runs in this one run against the
  same PostgreSQL and Redis, each with a fresh worker started for each repetition. The plain
  Celery app (`tests/benchmarks/plain_app.py`) takes its Celery settings from the same function
  as aicmo's app, `tasks/config.py`'s `celery_config(Settings())`, under the same `AICMO_*`
  environment, minus aicmo's queues and routing: `acks_late`, `reject_on_worker_lost`,
  prefetch multiplier 1, JSON, no result backend, `worker_send_task_events` from
  `AICMO_TASK_EVENTS` (default on, Flower needs it), `task_send_sent_event` off; its tasks have
  aicmo's task options (acks, `ignore_result`, the registry's soft/hard time limits). Before it
  measures anything the run builds both apps the way their workers do and compares every
  Celery setting (defaults included) and the task options; it stops if one differs
  (`tests/unit/test_bench_settings.py` checks the same). Both Celery workers:
  `celery worker -P prefork -c 2 -l INFO --without-mingle --without-gossip`, logging to a file.
- **Two plain baselines for each headline figure.** "plain, aicmo's settings" is the above;
  "plain, Celery's default events" is the same with both event switches at Celery's defaults
  (off), which is what a user who never turned events on compares against.
- **Ratios.** Within a repetition aicmo runs right between its two plain baselines (the context
  and reference runs follow), and the order is reversed every other repetition. A ratio is the
  median of the per-repetition ratios (each repetition's two sides ran back to back), shown
  with its range and the number of pairs; e2e and drain have 5 repetitions, the others 3. The
  rates shown are medians over the repetitions.
- **Load.** Each run records the 1-minute load average just before it starts, and the cores
  other processes kept busy in the half second before it (from `/proc/stat`, this process
  excluded; no worker of the run is running then). "load before" is the highest load average
  of a row's runs (or of the figure's start), with the most cores others used. A row marked
  **busy** had a load average above 1.0: the machine was not quiet, and its absolute figures
  (ratios less so) are understated. The load average also counts the benchmark's own
  previous minute; the others' cores tell the two apart.
- **CPU per action.** psutil user + system time of the worker's main process and of its
  children over the measured part of the run, divided by the actions run (table below; the
  enqueue, sweeper and fan-out figures show the calling process instead).
- **`AICMO_*` from the shell** (for example `AICMO_TASK_EVENTS=false make bench`) reach this
  process and every worker, so they apply to both sides; only the run's own database, broker,
  folders and action modules are replaced. The machine table lists the ones that were set.
- **Counting the baselines honestly.** A plain (or Dramatiq, or Procrastinate) job has no
  row to look at, so each ends with one pipelined Redis round trip (`INCR` a counter, `SET` its
  finish time), and each process records the start of its first job once. That is a little
  work aicmo does not do (it writes its SUCCESS row anyway, and the harness reads
  `started_at_utc` and `finished_at_utc` from it), so the baselines are, if anything, slightly
  understated.
- **End to end**: a fresh worker consumes while this process enqueues N no-op actions one by one
  (aicmo: the task's `.delay`, one autocommit INSERT, the message sent after its commit; plain:
  `apply_async`; Dramatiq: `send`; Procrastinate: `defer`); the clock runs from just before the
  first enqueue to the last completion (aicmo: `max(finished_at_utc)` of the SUCCESS rows). The
  producer shares the 2 cores with the worker; `enqueue_rate` in the details tells whether the
  producer or the worker was the bottleneck. Worker memory is read (psutil RSS of the main
  process plus its children; USS too) from the same workers right after the last completion. The
  "producer in calls of 100" row enqueues with `enqueue_many` 100 at a time (each call one batch
  message), so the worker, not the one-by-one producer, sets the pace. The "bulk end-to-end" row
  enqueues all its actions in one `enqueue_many` (batch messages of the type's batch size, 100)
  and is compared with plain's per-task rate and Dramatiq + PG.
- **One PostgreSQL state row per job** (the `-pg` runs): each job writes a row the way
  aicmo's engine does for one action, `INSERT .. ON CONFLICT` of the row then an `UPDATE` that
  finishes it, in one transaction (`tests/benchmarks/bench_effects.py`), measured in this run;
  aicmo's column is its ordinary no-op (its own state row is that write).
- **Reference columns**: Dramatiq with its Redis broker
  (`dramatiq tests.benchmarks.dramatiq_app --processes 2 --threads 1`: two processes running
  jobs, as prefork -c 2) and Procrastinate on this PostgreSQL
  (`procrastinate worker --concurrency 2`, one asyncio process, INFO logging), each with its
  default settings, the same jobs and the same producer loop, in the same run. Their versions
  are in the machine table.
- **Drain**: N messages queued first (aicmo: `.delay` N times, one message each; plain:
  `apply_async` loop),
  then the worker starts. Worker boot is excluded the same way for both: the clock starts at
  the first task's start (aicmo: `min(started_at_utc)`, set as the claim begins; plain: the
  first task's first line) and ends at the last completion. `rate_from_ready` (from the
  worker's "ready" log line, seen within 50 ms) is listed for reference.
- **Enqueue**: no worker running; 20 warm-up calls, then N timed calls. `cpu_ms_each` is the
  caller's CPU time per action. One by one: aicmo's `.delay` (a transaction of its own) vs
  `apply_async`; the context row is `enqueue_action` in the caller's transaction (a session,
  BEGIN, INSERT, COMMIT, then the message), the outbox way. Bulk: one `enqueue_many` of N
  items in one transaction, whose commit publishes the N messages, vs `apply_async` N times.
- **Start latency**: a paced producer at 200/s (from one thread; `max_send_lag_ms` and
  `sent_per_s` show whether it kept up; the label says so when it did not), after 20 warm-up
  tasks. The clock starts at the same point on both sides, where the caller starts: aicmo just
  before `.delay` (its INSERT, commit and publish), plain just before `apply_async`;
  it stops at the handler's first line (aicmo: `BENCH_STAMP` returns `time.time()`, stored in
  `result_json` with the SUCCESS row; plain: the task pushes its delay to Redis). A latency
  row is flagged when its offered rate is above the side's capacity measured in this run
  (drain, else e2e), or when, in the latency run itself, the handlers started more slowly
  than the actions were sent (`served_per_s` under 95% of `sent_per_s`): there it measures a
  growing backlog, not latency. Percentiles are nearest-rank
  over all samples of a repetition.
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
  harness process and competes with the worker for the 2 cores, on every side alike. The
  fan-out figure times `aicmo.cam.schedule.schedule_ticks` in one transaction, commit and
  publish included, over campaigns copied in SQL from one made by `create_campaign`.
- **Profiles** (the section before this one; `--only profiles`): after the figures, py-spy
  (`--gil`) samples a plain and an aicmo worker through 3,000 one-by-one actions and the
  embedded worker through 2,000, and each process role's psutil CPU per action is split over
  the packages in proportion to their samples; the latency figure is repeated at 50, 100 and
  150/s; pyinstrument profiles 1,000 one-by-one enqueues (wall clock) beside the floors
  measured with psycopg and redis-py alone; fresh interpreters import a worker's modules step
  by step (RSS growth, median of 3).
- **Noise.** The machine has 2 cores and other work may run on it. Ratios from one run are the
  figures to trust; absolute rates move with the load. Timed figures are never pass/fail
  tests: `tests/integration/test_bench_smoke.py` only checks that the harness runs and
  produces numbers.
"""


def missed_figures(rows: list[Row]) -> list[str]:
    """The names of the rows that missed their target, each readable alone: an indented
    "the same, vs X" row is named after the figure above it."""
    found: list[str] = []
    parent = ""
    for row in rows:
        name = row.figure.strip()
        if not row.figure.startswith(" "):
            parent = name.split(", vs ")[0]
        elif name.startswith("the same"):
            name = parent + name.removeprefix("the same")
        if row.met == "**no**":
            found.append(name)
    return found


def markdown(
    rows: list[Row],
    results: Results,
    facts: dict[str, str],
    command: str,
    reps: tuple[int, int],
    started: datetime,
    wall_seconds: float,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
    merged: str = "",
) -> str:
    fact_lines = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    from tests.benchmarks.bench_explain_report import render

    explained = render(results, missed_figures(rows))
    busy = [row.figure.strip() for row in rows if "busy" in row.load]
    quiet = (
        f"**{len(busy)} row(s) ran with a 1-minute load average above {LOAD_LIMIT:.1f}** "
        "before a run (marked busy): their absolute figures are understated."
        if busy
        else f"Every row's runs started with a 1-minute load average at or below {LOAD_LIMIT:.1f}."
    )
    return f"""# Benchmarks: aicmo against plain Celery (and Dramatiq, Procrastinate)

Measured {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC by `{command}` ({reps[0]} repetitions
for e2e and drain, {reps[1]} for the others; ratios are medians of per-repetition ratios; the
whole run took {wall_seconds / 60:.1f} min). Load average (1/5/15 min) at the start
{_load(load_start)}, at the end {_load(load_end)}. {quiet}{f" Merged: {merged}." if merged else ""}

Reproduce with `make bench` (the same as `{command}`); `python -m tests.benchmarks --help`
lists the options (`--quick`, `--only FIGURE`, `--reps N`, `--profile`). It needs PostgreSQL
and Redis on localhost, like `make test` (`AICMO_TEST_PG_ADMIN`, `AICMO_TEST_REDIS`).

{table(rows)}

## CPU per action and load, every figure

{cpu_table(results)}

{explained}## Machine

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
