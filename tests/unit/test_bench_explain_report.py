"""The "Where the misses come from" section is computed from the profiles it is given."""

from __future__ import annotations

from typing import Any

from tests.benchmarks.bench_explain_report import IMPORT_STEPS, render, split_cpu
from tests.benchmarks.bench_results import Results


def worker(main: dict[str, float], pool: dict[str, float]) -> dict[str, Any]:
    return {
        "count": 3000,
        "rate": 300.0,
        "main_cpu_ms": sum(main.values()),
        "pool_cpu_ms": sum(pool.values()),
        "main": main,
        "pool": pool,
    }


def latency(rate: float, plain_p99: float, aicmo_p99: float) -> dict[str, Any]:
    return {
        "rate": rate,
        "plain": {"p50_ms": 2.0, "p99_ms": plain_p99, "sent_per_s": rate},
        "aicmo": {"p50_ms": 3.0, "p99_ms": aicmo_p99, "sent_per_s": rate},
    }


def test_cpu_is_shared_out_in_proportion_to_the_samples() -> None:
    from collections import Counter

    assert split_cpu(Counter({"celery": 3, "aicmo": 1}), 2.0) == {"celery": 1.5, "aicmo": 0.5}
    assert split_cpu(Counter(), 2.0) == {}


def test_no_profiles_no_section() -> None:
    assert render(Results(), ["x"]) == ""


def test_the_section_names_the_misses_and_computes_its_verdicts() -> None:
    results = Results()
    results.add("e2e", "plain", {"rss": 160.0})
    results.add("e2e", "aicmo", {"rss": 240.0})
    results.profiles = {
        "worker_cpu": {
            "plain": worker({"celery": 1.0}, {"celery": 0.5}),
            "aicmo": worker({"celery": 1.0, "aicmo": 0.5}, {"sqlalchemy": 0.75, "celery": 0.25}),
        },
        "latency_ladder": [latency(50, 10.0, 12.0), latency(100, 10.0, 19.0), latency(150, 10, 90)],
        "enqueue": {
            "count": 1000,
            "aicmo_ms": 4.0,
            "profiled_ms": 5.0,
            "by_package_ms": {"psycopg": 3.0, "aicmo": 1.0},
            "plain_ms": 1.0,
            "durable_commit_ms": 2.5,
            "no_flush_commit_ms": 0.5,
            "redis_push_ms": 0.25,
        },
        "memory": {
            "steps": [label for label, _ in IMPORT_STEPS],
            "mib": [20.0, 9.0, 6.0, 14.0, 9.0, 3.0, 8.0],
            "plain_app_mib": 0.5,
        },
        "embedded": {"error": "RuntimeError: py-spy exited with 1"},
        "fanout": {
            "campaigns": 10_000,
            "seconds": 4.0,
            "cpu_seconds": 3.5,
            "by_package_s": {"sqlalchemy": 2.0, "aicmo": 1.5, "psycopg": 0.5},
        },
    }
    text = render(results, ["enqueue, one by one (2,000)", "worker memory"])

    assert "Missed in this run: enqueue, one by one (2,000); worker memory." in text
    # Worker CPU: 2.0 vs 1.5 ms -> +0.50 ms; sqlalchemy is the largest difference.
    assert "aicmo's worker spends 2.50 ms of CPU per action, plain's 1.50 ms (+1.00 ms)" in text
    assert "The largest differences: sqlalchemy +0.75 ms, aicmo +0.50 ms" in text
    assert "| **total** | **1.00** | **1.50** | **0.50** | **1.00** |" in text
    # Latency: within +10 ms at 50/s (+2) and 100/s (+9), not at 150/s (+80).
    assert "within plain's + 10 ms up to 100/s" in text
    assert "| 150/s | 2.0 ms | 10.0 ms | 3.0 ms | 90.0 ms | +80.0 ms | **no** |" in text
    # Enqueue: floor 2.5 + 0.25 = 2.75 ms; plain 1 ms -> at most 0.36x; the flush is 2.0 ms.
    assert "2.750 ms here" in text and "at most 0.36x" in text
    assert "(aicmo's: 4.000 ms, 0.25x)" in text
    assert "WAL flush is 2.000 ms of it" in text
    # Memory: main 9 + 6 = 15, each child 9 + 6 + 14 + 9 + 3 = 41 -> 97 MiB; 240 vs 1.3 x 160.
    assert "main process imports 15.0 MiB" in text and "each pool child 41.0 MiB" in text
    assert "97.0 MiB for a worker with 2 children" in text
    assert "(1.50x); 1.3x would need 32 MiB less" in text
    # Fan-out: 3.5 of 4.0 s is this process's CPU (0.350 ms a campaign): CPU-bound.
    assert "(0.350 ms per campaign): the fan-out is bound by this process's CPU" in text
    assert "the largest shares: sqlalchemy 2.00 s, aicmo 1.50 s, psycopg 0.50 s." in text
    # A part that failed says so, and the others still render.
    assert "Not measured: RuntimeError: py-spy exited with 1" in text
