"""Batched dispatch, the producer's half: cut a publish into broker messages.

A publish of many items at once (``enqueue_many``, the sweeper's sends and resends, beat's
fan-out, a replay of many: Dispatch.batchable) is cut, per type, priority and countdown, into
chunks of the type's :meth:`ActionType.batching` size. A single enqueue is a single message,
and a type with a concurrency key is never batched. How a batch message runs is
aicmo.orchestration.batch (the worker's half, which holds the engine; this half must stay
light enough for any process that publishes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aicmo.orchestration.dispatch import Dispatch
from aicmo.orchestration.registry import ActionType, registry


@dataclass(frozen=True, slots=True)
class Batch:
    """One broker message's worth of ids (a single action when ``len(ids) == 1``)."""

    action_type: str
    ids: tuple[int, ...]
    countdown: float = 0.0
    priority: int | None = None


def plan(items: Sequence[Dispatch]) -> list[Batch]:
    """Cut a publish into messages: one per item unless several batchable items (a bulk
    operation's: Dispatch.batchable) share type, priority and countdown (all "now" count as
    one), then chunks of the type's batch size."""
    singles = [i for i in items if not i.batchable]
    batches = [Batch(i.action_type, (i.action_id,), i.countdown, i.priority) for i in singles]
    bulk = [i for i in items if i.batchable]
    if len(bulk) <= 1:
        return batches + [
            Batch(i.action_type, (i.action_id,), i.countdown, i.priority) for i in bulk
        ]
    groups: dict[tuple[str, int | None, float], list[int]] = {}
    for item in bulk:
        countdown = item.countdown if item.countdown > 0 else 0.0
        groups.setdefault((item.action_type, item.priority, countdown), []).append(item.action_id)
    for (action_type, priority, countdown), ids in groups.items():
        size = registry.get(action_type).batching()
        # An id named twice (a duplicate hint) goes into a second message, as it would
        # unbatched: a batch claims each of its ids once.
        rounds: list[list[int]] = []
        seen: dict[int, int] = {}
        for action_id in ids:
            n = seen[action_id] = seen.get(action_id, -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(action_id)
        for chunkable in rounds:
            for start in range(0, len(chunkable), size):
                chunk = tuple(chunkable[start : start + size])
                batches.append(Batch(action_type, chunk, countdown, priority))
    return batches


def batch_time_limit(spec: ActionType, count: int) -> float:
    """Celery's hard limit for the whole message: a backstop behind the per-action clock."""
    return count * spec.time_limit + spec.lease_seconds() - spec.time_limit
