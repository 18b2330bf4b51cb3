"""The web benchmark harness still runs (``make bench-web``); no timing is judged here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT


def test_web_bench_harness_runs_on_a_small_table(tmp_path: Path) -> None:
    out = tmp_path / "web.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.bench_web",
            "--actions",
            "3000",
            "--reps",
            "2",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text()
    assert "| page | `/` |" in report and "| api | `/api/actions` |" in report
