"""The arithmetic and the marks of BENCHMARKS.md: paired ratios, their median and range,
the busy-machine mark, the over-capacity flag of a latency row, and the run order that
pairs each side with its baselines back to back."""

from __future__ import annotations

import math

from tests.benchmarks.bench_report import (
    Row,
    build_rows,
    cpu_rows,
    fell_behind,
    load_before,
    load_mark,
    markdown,
    missed_figures,
    over_capacity,
    paired_ratios,
    ratio_stat,
)
from tests.benchmarks.bench_results import QUICK, Results, run_order, served_rate


def _results(values: dict[str, dict[str, dict[str, list[float]]]]) -> Results:
    results = Results()
    for figure, sides in values.items():
        for kind, metrics in sides.items():
            for rep in range(max(len(v) for v in metrics.values())):
                results.add(
                    figure, kind, {name: v[rep] for name, v in metrics.items() if rep < len(v)}
                )
    return results


def test_ratios_pair_each_repetition_with_its_own_baseline() -> None:
    aicmo = [100.0, 200.0, 150.0]
    plain = [200.0, 250.0, 300.0]
    assert paired_ratios(aicmo, plain) == [0.5, 0.8, 0.5]
    stat = ratio_stat(aicmo, plain)
    assert stat is not None
    # The median of the ratios (0.5), not the ratio of the medians (150/250 = 0.6).
    assert (stat.median, stat.low, stat.high, stat.pairs) == (0.5, 0.5, 0.8, 3)


def test_a_repetition_missing_on_one_side_or_a_zero_baseline_is_left_out() -> None:
    assert paired_ratios([1.0, 2.0, 3.0], [2.0, 0.0]) == [0.5]
    assert paired_ratios([1.0], [math.nan]) == []
    assert ratio_stat([], [1.0]) is None


def test_the_median_of_an_even_number_of_ratios_is_the_mean_of_the_middle_two() -> None:
    stat = ratio_stat([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0])
    assert stat is not None and stat.median == 2.5


def test_run_order_puts_aicmo_between_its_baselines_and_reverses_every_other_rep() -> None:
    kinds = ["plain", "aicmo", "plain-noevents", "plain-pg", "dramatiq"]
    first, second = run_order(kinds, 0), run_order(kinds, 1)
    assert first == ["plain", "aicmo", "plain-noevents", "plain-pg", "dramatiq"]
    assert second == first[::-1]
    for order in (first, second):
        at = order.index("aicmo")
        assert {order[at - 1], order[at + 1]} == {"plain", "plain-noevents"}
    assert run_order(["plain", "aicmo"], 1) == ["aicmo", "plain"]


def test_load_above_one_before_any_run_marks_the_row_busy() -> None:
    results = _results(
        {
            "e2e": {
                "plain": {"rate": [500.0, 520.0], "load1_before": [0.4, 0.6]},
                "aicmo": {"rate": [250.0, 260.0], "load1_before": [0.5, 1.7]},
            }
        }
    )
    assert load_before(results, "e2e", ("plain",)) == 0.6
    assert load_before(results, "e2e", ("plain", "aicmo")) == 1.7
    assert load_mark(0.6) == "0.60"
    assert load_mark(1.0) == "1.00"
    assert load_mark(1.01) == "**1.01 busy**"
    [headline] = [r for r in build_rows(results, QUICK) if r.figure.startswith("end-to-end")]
    assert headline.load == "**1.70 busy**"
    assert headline.ratio == "0.50x (0.50-0.50, 2 pairs)"


def test_the_load_mark_shows_what_other_processes_used_just_before() -> None:
    """The 1-minute load average still counts the previous run's workers: the cores other
    processes used just before each run are shown beside it."""
    assert load_mark(1.7, others=0.1) == "**1.70 busy** (others 0.10 cores just before)"
    assert load_mark(0.8, others=0.9) == "0.80 (others 0.90 cores just before)"
    results = _results(
        {
            "e2e": {
                "plain": {"rate": [1.0, 1.0], "load1_before": [1.5, 1.6]},
                "aicmo": {
                    "rate": [1.0, 1.0],
                    "load1_before": [1.4, 1.8],
                    "others_cores_before": [0.05, 0.4],
                },
            }
        }
    )
    [headline] = [r for r in build_rows(results, QUICK) if r.figure.startswith("end-to-end")]
    assert headline.load == "**1.80 busy** (others 0.40 cores just before)"


def test_the_load_before_the_figure_started_counts_too() -> None:
    results = _results({"drain": {"aicmo": {"rate": [1.0], "load1_before": [0.2]}}})
    results.load_before["drain"] = (2.5, 1.0, 1.0)
    assert load_before(results, "drain", ("aicmo",)) == 2.5
    results.load_before["sweeper"] = (1.5, 1.0, 1.0)
    assert load_before(results, "sweeper_large", ("aicmo",)) == 1.5


def test_headline_rows_compare_against_both_plain_baselines_with_references() -> None:
    results = _results(
        {
            "e2e": {
                "plain": {"rate": [300.0, 320.0, 310.0, 330.0, 305.0]},
                "plain-noevents": {"rate": [600.0, 640.0, 620.0, 660.0, 610.0]},
                "aicmo": {"rate": [150.0, 160.0, 155.0, 165.0, 152.5]},
                "dramatiq": {"rate": [490.0]},
                "procrastinate": {"rate": [170.0]},
            }
        }
    )
    rows = {r.figure: r for r in build_rows(results, QUICK)}
    [vs_plain] = [r for f, r in rows.items() if f.startswith("end-to-end")]
    [vs_default] = [r for f, r in rows.items() if "Celery's default events" in f and "(" not in f]
    assert vs_plain.ratio == "0.50x (0.50-0.50, 5 pairs)"
    assert vs_default.ratio == "0.25x (0.25-0.25, 5 pairs)"
    assert (vs_plain.dramatiq, vs_plain.procrastinate) == ("490/s", "170/s")
    assert vs_plain.met == vs_default.met == "**no**"


def test_a_latency_row_over_the_measured_capacity_is_flagged() -> None:
    assert over_capacity(200.0, 150.0)
    assert not over_capacity(200.0, 200.0)
    assert not over_capacity(200.0, None)
    results = _results(
        {
            "drain": {"plain": {"rate": [800.0]}, "aicmo": {"rate": [150.0]}},
            "latency": {
                "plain": {"p50_ms": [2.0], "p99_ms": [5.0], "sent_per_s": [200.0]},
                "aicmo": {"p50_ms": [900.0], "p99_ms": [1300.0], "sent_per_s": [200.0]},
            },
        }
    )
    latency = [r for r in build_rows(results, QUICK) if r.figure.startswith("start latency")]
    assert len(latency) == 2
    for row in latency:
        assert "over aicmo's measured capacity 150/s" in row.figure
        assert "over plain's" not in row.figure


def test_a_latency_run_whose_handlers_fell_behind_the_producer_is_flagged() -> None:
    assert fell_behind(200.0, 150.0)
    assert not fell_behind(200.0, 195.0)
    assert not fell_behind(200.0, None)
    assert not fell_behind(200.0, math.nan)
    results = _results(
        {
            "drain": {"plain": {"rate": [800.0]}, "aicmo": {"rate": [400.0]}},
            "latency": {
                "plain": {"p50_ms": [2.0], "sent_per_s": [200.0], "served_per_s": [199.0]},
                "aicmo": {"p50_ms": [4000.0], "sent_per_s": [150.0], "served_per_s": [110.0]},
            },
        }
    )
    [p50] = [r for r in build_rows(results, QUICK) if r.figure.startswith("start latency")]
    assert "aicmo fell behind: served 110/s of 150/s" in p50.figure
    assert "aicmo sent 150/s" in p50.figure
    assert "plain fell behind" not in p50.figure and "capacity" not in p50.figure


def test_served_rate_is_first_start_to_last() -> None:
    assert served_rate([(0.0, 1.0), (0.1, 1.5), (0.2, 2.0)]) == 2.0
    assert math.isnan(served_rate([(0.0, 1.0)]))


def test_every_figure_gets_a_cpu_row_per_side() -> None:
    results = _results(
        {
            "e2e": {"aicmo": {"main_cpu_ms": [2.0, 3.0], "pool_cpu_ms": [1.0, 1.0]}},
            "enqueue_one": {"plain": {"cpu_ms_each": [0.5], "load1_before": [1.5]}},
        }
    )
    rows = cpu_rows(results)
    assert rows[0] == ["e2e", "aicmo", "worker, per action", "2.50 ms", "1.00 ms", "—"]
    assert rows[1] == [
        "enqueue_one",
        "plain",
        "caller, per action",
        "0.50 ms",
        "—",
        "**1.50 busy**",
    ]


def test_the_report_says_when_rows_ran_on_a_busy_machine() -> None:
    from datetime import UTC, datetime

    results = _results({"e2e": {"plain": {"rate": [1.0]}, "aicmo": {"rate": [1.0]}}})
    results.load_before["e2e"] = (3.0, 2.0, 1.0)
    text = markdown(
        build_rows(results, QUICK),
        results,
        {},
        "python -m tests.benchmarks",
        (5, 3),
        datetime(2026, 12, 1, tzinfo=UTC),
        60.0,
        (3.0, 2.0, 1.0),
        (3.0, 2.0, 1.0),
    )
    assert "1-minute load average above 1.0" in text and "busy" in text


def test_a_merged_run_keeps_the_earlier_figures_and_drops_the_ones_measured_again() -> None:
    import json

    earlier = Results()
    earlier.add("e2e", "plain", {"rate": 300.0})
    earlier.add("drain", "aicmo", {"rate": 100.0})
    earlier.add("sweeper_small", "aicmo", {"ms": 60.0})
    earlier.load_before["drain"] = (0.5, 0.4, 0.3)
    earlier.not_measured["drain"] = "error: RuntimeError"
    earlier.profiles = {"memory": {"mib": [1.0]}}
    again = Results.from_json(json.loads(json.dumps(earlier.as_json())))
    assert again.get("e2e", "plain", "rate") == [300.0]
    assert again.load_before["drain"] == (0.5, 0.4, 0.3)
    again.drop("drain")
    again.drop("sweeper")
    assert again.get("drain", "aicmo", "rate") == [] and "drain" not in again.not_measured
    assert "sweeper_small" not in again.values and "drain" not in again.load_before
    assert again.get("e2e", "plain", "rate") == [300.0] and again.profiles


def test_a_missed_the_same_row_is_named_after_the_figure_above_it() -> None:
    def row(figure: str, met: str) -> Row:
        return Row(figure, "1", "1", "1x", ">= 0.7x", met)

    rows = [
        row("e2e throughput (5,000 no-op), vs plain, aicmo's settings", "**no**"),
        row("  the same, vs plain, Celery's default events", "**no**"),
        row("  context: one PostgreSQL state row per job", ""),
        row("drain throughput (5,000 queued), vs plain, aicmo's settings", "yes"),
        row("  the same, vs plain, Celery's default events", "**no**"),
    ]
    assert missed_figures(rows) == [
        "e2e throughput (5,000 no-op), vs plain, aicmo's settings",
        "e2e throughput (5,000 no-op), vs plain, Celery's default events",
        "drain throughput (5,000 queued), vs plain, Celery's default events",
    ]
