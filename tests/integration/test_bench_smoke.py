"""The benchmark harness still runs (``make bench``); no timing is judged here.

Runs the quick mode's smallest figure (enqueue one by one, both sides, one repetition) in a
subprocess, with its own database and Redis database number, and checks that it compared the
two apps' Celery settings first and produced a number for each side. Timed figures are never
pass/fail tests: see BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT


def test_quick_harness_runs_and_produces_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks",
            "--quick",
            "--only",
            "enqueue_one",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        # The shell's AICMO_* settings reach the benchmark's workers: leave the suite's tuned
        # knobs (lease margin, sweep interval...) out, as a user's shell would not have them.
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AICMO_") or k.startswith("AICMO_TEST_")
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "effective Celery settings compared: the same" in done.stdout
    assert "enqueue, one by one" in done.stdout
    results = json.loads(out.read_text())
    for kind in ("plain", "aicmo"):
        [rate] = results["values"]["enqueue_one"][kind]["rate"]
        assert rate > 0 and math.isfinite(rate), (kind, rate)
