"""The beat books' rule for skipped ticks (tests/integration/test_beat.py): a skip is
explained only by a working tick of the same campaign running at the same time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.test_beat import Tick, unexplained_skips

T0 = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


def tick(id: int, campaign: int, start: float, end: float, *, skipped: bool = False) -> Tick:
    return Tick(
        id=id,
        campaign=campaign,
        slot=T0,
        status="SUCCESS",
        outcome="skipped" if skipped else "done",
        succeeded=1,
        runs=0 if skipped else 1,
        started=T0 + timedelta(seconds=start),
        finished=T0 + timedelta(seconds=end),
    )


def test_a_skip_while_a_working_tick_of_its_campaign_runs_is_explained() -> None:
    holder = tick(1, 7, 0.0, 2.0)
    inside, at_its_commit = tick(2, 7, 1.0, 1.1, skipped=True), tick(3, 7, 2.2, 2.3, skipped=True)
    assert unexplained_skips([holder, inside, at_its_commit]) == []


def test_a_skip_with_no_tick_running_is_reported() -> None:
    before, after = tick(1, 7, 0.0, 1.0), tick(2, 7, 5.0, 6.0)
    alone = tick(3, 7, 2.0, 2.1, skipped=True)  # a lease left behind would do this
    assert unexplained_skips([before, alone, after]) == [alone]


def test_a_tick_of_another_campaign_or_another_skip_explains_nothing() -> None:
    other = tick(1, 8, 0.0, 10.0)
    first, second = tick(2, 7, 1.0, 3.0, skipped=True), tick(3, 7, 2.0, 4.0, skipped=True)
    assert unexplained_skips([other, first, second]) == [first, second]
