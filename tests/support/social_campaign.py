"""The campaign action types on a queue of their own, for the live social campaign test.

A live campaign's actions must reach only the live worker the test starts (pointed at the
local platforms), never the shared proof-mode worker that reads "aol". Loaded by that worker
(``AICMO_ACTION_MODULES``, with ``AICMO_TEST_CAMPAIGN_QUEUE`` set), this module moves the
CAMPAIGN_* types to that queue; the test process calls :func:`move_campaign_types` itself
and puts them back afterwards.
"""

from __future__ import annotations

import dataclasses
import os

from aicmo.cam import keys
from aicmo.orchestration.adapters import campaign_adapter  # noqa: F401  (registers the types)
from aicmo.orchestration.registry import ActionType, registry

SOCIAL_QUEUE = "social"
TYPES = (keys.TICK, keys.PUBLISH, keys.FETCH_METRICS, keys.CAPTURE_LEADS)


def move_campaign_types(queue: str) -> dict[str, ActionType]:
    """Route the campaign types to ``queue``; returns the specs as they were."""
    before = {name: registry.get(name) for name in TYPES}
    for spec in before.values():
        registry.register(dataclasses.replace(spec, queue=queue), replace=True)
    return before


def restore(before: dict[str, ActionType]) -> None:
    for spec in before.values():
        registry.register(spec, replace=True)


if os.environ.get("AICMO_TEST_CAMPAIGN_QUEUE"):
    move_campaign_types(os.environ["AICMO_TEST_CAMPAIGN_QUEUE"])
