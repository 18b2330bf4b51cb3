"""The campaign action types are registered with their payload models and limits."""

from __future__ import annotations

import pytest

from aicmo.orchestration.errors import InvalidPayload
from aicmo.orchestration.queue import validate_payload
from aicmo.orchestration.registry import registry

TYPES = [
    "CAMPAIGN_TICK",
    "CAMPAIGN_PUBLISH",
    "CAMPAIGN_FETCH_METRICS",
    "CAMPAIGN_CAPTURE_LEADS",
    "FETCH_LEADS",
]


def test_every_campaign_type_is_registered() -> None:
    assert set(TYPES) <= set(registry.names())
    for name in TYPES:
        spec = registry.get(name)
        assert spec.soft_time_limit < spec.time_limit and spec.retry.max_attempts >= 3


@pytest.mark.parametrize(
    ("action_type", "payload", "problem"),
    [
        ("CAMPAIGN_TICK", {"campaign_id": 0}, "campaign_id"),
        ("CAMPAIGN_TICK", {"campaign_id": 1, "slot": "2026-01-01T00:00:00"}, "timezone"),
        ("CAMPAIGN_PUBLISH", {"message_id": "x"}, "message_id"),
        ("CAMPAIGN_PUBLISH", {"message_id": 1, "extra": 1}, "extra"),
        ("CAMPAIGN_FETCH_METRICS", {"campaign_id": 1, "date": "yesterday"}, "date"),
        ("CAMPAIGN_CAPTURE_LEADS", {"campaign_id": 1, "source": "A B", "leads": [{}]}, "source"),
        ("CAMPAIGN_CAPTURE_LEADS", {"campaign_id": 1, "source": "crm", "leads": []}, "leads"),
        ("FETCH_LEADS", {"campaign_id": 1}, "source"),
    ],
)
def test_bad_payloads_are_refused_at_enqueue(
    action_type: str, payload: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        validate_payload(registry.get(action_type), payload)


def test_a_capture_accepts_any_lead_shape_and_leaves_judging_each_to_the_handler() -> None:
    payload = {"campaign_id": 1, "source": "crm", "leads": [{"email": "x"}, "junk", 3]}
    assert validate_payload(registry.get("CAMPAIGN_CAPTURE_LEADS"), payload)["leads"] == [
        {"email": "x"},
        "junk",
        3,
    ]
