"""Action types, one module per family. Importing this package declares all of them (it is
the default of ``AICMO_ACTION_MODULES``); each family's module, with the campaign code,
gateways and ORM models it needs, is imported when its type is first run or enqueued (see
aicmo.orchestration.registry). A type's queue, limits and retry policy live here only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from aicmo.orchestration.registry import registry
from aicmo.orchestration.retry import RetryPolicy

__all__ = [
    "campaign_adapter",
    "email_adapter",
    "leads_adapter",
    "outcomes_adapter",
    "social_adapter",
]


def _module(name: str) -> str:
    return f"{__name__}.{name}"


registry.declare(
    "CAMPAIGN_TICK",
    _module("campaign_adapter"),
    retry=RetryPolicy(max_attempts=3, base_delay=10, max_delay=120),
    soft_time_limit=240,
    time_limit=300,
    # Never batched: a tick drafts a whole campaign's due steps (minutes with an LLM) under
    # the campaign's lease. In a batch, ticks of many campaigns would wait on one another in
    # one process, and a delayed tick would hold its campaign's lease while the next slot's
    # tick came due (seen as "skipped" ticks in tests/chaos/test_chaos_beat.py).
    batch_size=1,
)
registry.declare(
    "CAMPAIGN_PUBLISH",
    _module("campaign_adapter"),
    retry=RetryPolicy(max_attempts=6, base_delay=10, max_delay=1800),
    soft_time_limit=60,
    time_limit=90,
)
registry.declare(
    "CAMPAIGN_FETCH_METRICS",
    _module("campaign_adapter"),
    retry=RetryPolicy(max_attempts=5, base_delay=30, max_delay=1800),
    soft_time_limit=120,
    time_limit=150,
)
registry.declare(
    "CAMPAIGN_CAPTURE_LEADS",
    _module("campaign_adapter"),
    retry=RetryPolicy(max_attempts=5, base_delay=5, max_delay=600),
    soft_time_limit=120,
    time_limit=150,
)
registry.declare(
    "SEND_EMAIL",
    _module("email_adapter"),
    retry=RetryPolicy(max_attempts=6, base_delay=10, max_delay=1800),
    soft_time_limit=60,
    time_limit=90,
)
registry.declare(
    "FETCH_LEADS",
    _module("leads_adapter"),
    retry=RetryPolicy(max_attempts=4, base_delay=30, max_delay=900),
    soft_time_limit=240,
    time_limit=300,
)
registry.declare(
    "EMAIL_EVENT",
    _module("outcomes_adapter"),
    retry=RetryPolicy(max_attempts=8, base_delay=5, max_delay=600),
    soft_time_limit=30,
    time_limit=45,
)
registry.declare(
    "POST_SOCIAL",
    _module("social_adapter"),
    retry=RetryPolicy(max_attempts=5, base_delay=5, max_delay=900),
    soft_time_limit=60,
    time_limit=90,
)


def __getattr__(name: str) -> ModuleType:
    # ``adapters.campaign_adapter`` keeps working without importing every family up front.
    if name in __all__:
        return importlib.import_module(_module(name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
