"""Fixtures of the host suite (tests/hosts): worker hosts in network namespaces of their own
(tests/support/hosts.py), and the host books printed after the chaos books.

Needs root (CI runs as root): without a working ``ip netns`` every test here fails loudly,
never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tests.support.host_actions  # noqa: F401 - registers T_HOST_EFFECT in this process
from tests.conftest import TEST_ENV
from tests.support.hosts import HostNet, HostsUnavailable


@pytest.fixture
def hostnet(database_url: str, celery_app: Any, log_dir: Path) -> Iterator[HostNet]:
    """Hosts on demand (``hostnet.add(2)``); all of them gone after the test, pass or fail."""
    net = HostNet(database_url, TEST_ENV["AICMO_BROKER_URL"], log_dir)
    try:
        try:
            net.add(0)  # checks ip netns / veth / tc netem work here, loudly
        except HostsUnavailable as exc:
            pytest.fail(f"worker hosts need `ip netns` (root, iproute2): {exc}", pytrace=False)
        yield net
    finally:
        net.close()
    left = net.leftovers()
    assert not left, f"teardown left {left}"


@dataclass
class HostBooks:
    """What the chaos ledger does not hold: external effects and what a host's lost link did."""

    scenario: str
    external_calls: int = 0
    external_duplicated: int = 0  # documented: external effects are at-least-once
    figures: dict[str, Any] = field(default_factory=dict)


_books: list[HostBooks] = []


@pytest.fixture
def host_books(request: pytest.FixtureRequest) -> Iterator[HostBooks]:
    entry = HostBooks(request.node.name.removeprefix("test_"))
    yield entry
    _books.append(entry)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _books:
        return
    terminalreporter.write_sep("=", "hosts: external effects and figures")
    lines = []
    for entry in _books:
        figures = ", ".join(f"{k} {v}" for k, v in entry.figures.items())
        lines.append(
            f"{entry.scenario}: external calls {entry.external_calls}, duplicated "
            f"{entry.external_duplicated} (documented, at-least-once); {figures}"
        )
    for line in lines:
        terminalreporter.write_line(line)
    report = Path(__file__).resolve().parents[2] / "var" / "hosts-report.md"
    report.parent.mkdir(exist_ok=True)
    report.write_text("\n".join(f"- {line}" for line in lines) + "\n")
