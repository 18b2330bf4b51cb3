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
from aicmo.orchestration.registry import registry
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
