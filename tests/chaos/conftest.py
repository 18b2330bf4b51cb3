"""The fault-injection suite's workers; its books (the ``ledger`` fixture) are in
tests/support/books.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import CeleryProcess, worker


@pytest.fixture
def chaos_workers(log_dir: Path) -> Iterator[list[CeleryProcess]]:
    """Two worker processes on the isolated queue; tests kill and restart them at will."""
    started: list[CeleryProcess] = []
    try:
        for _ in range(2):
            # Appended before start: one that fails to start must not orphan the other.
            started.append(worker(log_dir, concurrency=1, extra=["-Q", "isolated"]))
            started[-1].start()
        yield started
    finally:
        for process in started:
            process.stop()
