"""How a publish is cut into messages (aicmo.orchestration.batch_plan.plan)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aicmo.config import reload_settings
from aicmo.orchestration.batch_plan import Batch, batch_time_limit, plan
from aicmo.orchestration.dispatch import Dispatch
from aicmo.orchestration.registry import registry


@pytest.fixture
def batch_size(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    monkeypatch.delenv("AICMO_BATCH_SIZE", raising=False)
    reload_settings()


def bulk(
    action_id: int, action_type: str, countdown: float = 0.0, priority: int | None = None
) -> Dispatch:
    """A hint sent by a bulk operation (enqueue_many, the sweeper, a replay of many)."""
    return Dispatch(action_id, action_type, countdown, priority, batchable=True)


def test_single_enqueues_stay_single_messages_also_when_committed_together() -> None:
    got = plan([Dispatch(i, "T_NOOP") for i in range(3)] + [bulk(10, "T_NOOP"), bulk(11, "T_NOOP")])
    assert got == [
        Batch("T_NOOP", (0,)),
        Batch("T_NOOP", (1,)),
        Batch("T_NOOP", (2,)),
        Batch("T_NOOP", (10, 11)),
    ]


def test_a_single_item_stays_a_single_message() -> None:
    assert plan([bulk(7, "T_NOOP", 2.5, 6)]) == [Batch("T_NOOP", (7,), 2.5, 6)]


def test_items_are_grouped_by_type_priority_and_countdown_then_chunked() -> None:
    items = [bulk(i, "T_NOOP") for i in range(250)]
    items += [bulk(1000, "T_NOOP", 0.0, 6), bulk(1001, "T_NOOP", 0.0, 6)]
    items += [bulk(2000, "T_NOOP", 3.0), bulk(2001, "T_NOOP", 4.0)]
    items += [bulk(3000, "T_EFFECT"), bulk(3001, "T_EFFECT", -1.0)]  # overdue = now
    got = plan(items)
    assert [len(b.ids) for b in got if b.action_type == "T_NOOP" and b.priority is None] == [
        100,
        100,
        50,
        1,
        1,
    ]
    assert Batch("T_NOOP", (1000, 1001), 0.0, 6) in got
    assert Batch("T_EFFECT", (3000, 3001), 0.0, None) in got
    assert sorted(i for b in got for i in b.ids) == sorted(i.action_id for i in items)


def test_a_duplicate_hint_goes_into_a_second_message() -> None:
    got = plan([bulk(1, "T_NOOP"), bulk(2, "T_NOOP"), bulk(1, "T_NOOP")])
    assert got == [Batch("T_NOOP", (1, 2)), Batch("T_NOOP", (1,))]


def test_types_with_a_concurrency_key_are_never_batched() -> None:
    assert registry.get("T_KEYED").batching() == 1
    got = plan([bulk(i, "T_KEYED") for i in range(3)])
    assert [b.ids for b in got] == [(0,), (1,), (2,)]


def test_batch_size_one_turns_batching_off(
    batch_size: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICMO_BATCH_SIZE", "1")
    reload_settings()
    assert [b.ids for b in plan([bulk(i, "T_NOOP") for i in range(3)])] == [(0,), (1,), (2,)]


def test_the_message_hard_limit_covers_the_batch() -> None:
    spec = registry.get("T_NOOP")
    margin = spec.lease_seconds() - spec.time_limit
    assert batch_time_limit(spec, 100) == 100 * spec.time_limit + margin
