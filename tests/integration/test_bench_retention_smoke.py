"""The retention benchmark harness still runs (``make bench-retention``); no timing is judged
here, only that the purge's batch is read from its partial index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT


def test_retention_bench_harness_runs_on_small_tables(tmp_path: Path) -> None:
    out = tmp_path / "retention.md"
    args = ["--rows", "3000,6000", "--batch-size", "500", "--batches", "2", "--output", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_retention", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text()
    assert "| 6,000 |" in report and "ix_aol_actions_finished" in report
