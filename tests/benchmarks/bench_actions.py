"""Action types of the benchmarks (loaded through ``AICMO_ACTION_MODULES``).

The throughput figures use ``T_NOOP`` from tests/support/actions.py. The latency figure needs
the moment the handler started: ``BENCH_STAMP`` returns it, and the executor stores it in
``result_json`` with the SUCCESS transition it writes anyway, so measuring adds no work.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.registry import Concurrency, registry
from aicmo.orchestration.retry import RetryPolicy

STAMP = "BENCH_STAMP"


class StampPayload(BaseModel):
    n: int = 0


@registry.action(
    STAMP,
    payload=StampPayload,
    retry=RetryPolicy(max_attempts=1, base_delay=0.0, factor=1.0, max_delay=0.0, jitter=0.0),
)
def stamp(ctx: ActionContext, payload: StampPayload) -> dict[str, Any]:
    """Return the wall-clock time the handler started (benchmarks only)."""
    return {"started": time.time()}


# -- bench_admission: a campaign publish with and without admission -----------------------

PUBLISH_ON = "BENCH_PUBLISH_ADMITTED"
PUBLISH_OFF = "BENCH_PUBLISH_PLAIN"
QUEUE_ON = "bench.admitted"
QUEUE_OFF = "bench.plain"
# Every pool process of the "on" workers may hold a slot: the key is taken and released on
# every run, never waited for (what is measured is the cost, not a queue).
KEYED_SLOTS = 4


class BenchPublishPayload(BaseModel):
    message_id: int
    account: str = "bench"


def _publish(ctx: ActionContext, payload: BenchPublishPayload) -> dict[str, Any]:
    """CAMPAIGN_PUBLISH's own handler (review gate, daily limit, window, caps, proof send)."""
    from aicmo.orchestration.adapters.campaign_adapter import (
        CampaignPublishPayload,
        campaign_publish,
    )

    return campaign_publish(ctx, CampaignPublishPayload(message_id=payload.message_id))


registry.action(PUBLISH_OFF, payload=BenchPublishPayload, queue=QUEUE_OFF)(_publish)
registry.action(
    PUBLISH_ON,
    payload=BenchPublishPayload,
    queue=QUEUE_ON,
    concurrency=Concurrency("account", KEYED_SLOTS),
)(_publish)


# The claim's own cost: T_NOOP (tests/support/actions.py) with a concurrency key and nothing
# else, so the pair differs only by the keyed claim and the release.
KEYED_NOOP = "BENCH_KEYED_NOOP"


class KeyedNoopPayload(BaseModel):
    n: int = 0
    account: str = "bench"


@registry.action(
    KEYED_NOOP, payload=KeyedNoopPayload, concurrency=Concurrency("account", KEYED_SLOTS)
)
def keyed_noop(ctx: ActionContext, payload: KeyedNoopPayload) -> None:
    """Do nothing, under a concurrency key (benchmarks only)."""
