"""The books every fault scenario keeps (tests/chaos, tests/hosts): actions, lost, duplicated,
DLQ, refused, stranded (what `aicmo doctor` finds that nothing will move) and time, printed as
one table at the end of the run and written to var/chaos-report.md.

Registered as a plugin by tests/conftest.py, so any suite can ask for the ``ledger`` fixture.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.doctor import stranded

if TYPE_CHECKING:
    from tests.conftest import Book


@dataclass
class Ledger:
    """What a scenario expected and what the effect ledger and the table say happened."""

    scenario: str
    actions: int = 0
    lost: int = 0
    duplicated: int = 0
    dlq: int = 0
    refused: int = 0
    stranded: int | None = None  # doctor's count once the scenario is over
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def settle(self, book: Book, ids: list[int], tag_prefix: str) -> None:
        """Count lost (no effect row) and duplicated (more than one) for these actions."""
        counts: dict[int, int] = dict.fromkeys(ids, 0)
        for _, action_id, _ in book.effects(tag_prefix):
            if action_id in counts:
                counts[action_id] += 1
        self.actions += len(ids)
        self.lost += sum(1 for n in counts.values() if n == 0)
        self.duplicated += sum(n - 1 for n in counts.values() if n > 1)

    def census(self) -> list[str]:
        """What doctor finds stranded now (the whole database, not only these ids)."""
        found = stranded()
        self.stranded = len(found)
        return found


_ledgers: list[Ledger] = []


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    entry = Ledger(request.node.name.removeprefix("test_"))
    started = time.monotonic()
    yield entry
    entry.seconds = time.monotonic() - started
    if entry.stranded is None:  # a scenario that did not take the census itself
        entry.census()
    _ledgers.append(entry)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ledgers:
        return
    header = (
        f"{'scenario':<48} {'actions':>8} {'lost':>5} {'dup':>5} {'DLQ':>5} "
        f"{'refused':>8} {'stranded':>9} {'time s':>7}"
    )
    lines = [header, "-" * len(header)]
    for e in _ledgers:
        lines.append(
            f"{e.scenario:<48} {e.actions:>8} {e.lost:>5} {e.duplicated:>5} {e.dlq:>5} "
            f"{e.refused:>8} {e.stranded if e.stranded is not None else '-':>9} "
            f"{e.seconds:>7.1f}"
        )
    terminalreporter.write_sep("=", "chaos: the books")
    for line in lines:
        terminalreporter.write_line(line)
    report = Path(__file__).resolve().parents[2] / "var" / "chaos-report.md"
    report.parent.mkdir(exist_ok=True)
    report.write_text("```\n" + "\n".join(lines) + "\n```\n")
