"""Idempotency keys of the campaign actions, in the formats DESIGN.md fixes.

A key names the unit of work, so enqueueing it twice (two beat processes, a retried tick, a
webhook delivered again) yields one action.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from aicmo.orchestration.errors import InvalidSchedule

TICK = "CAMPAIGN_TICK"
PUBLISH = "CAMPAIGN_PUBLISH"
FETCH_METRICS = "CAMPAIGN_FETCH_METRICS"
CAPTURE_LEADS = "CAMPAIGN_CAPTURE_LEADS"
FETCH_LEADS = "FETCH_LEADS"


def utc_slot(slot: datetime) -> datetime:
    if slot.tzinfo is None or slot.utcoffset() is None:
        raise InvalidSchedule(f"slot {slot.isoformat()} is a naive datetime; give a timezone")
    return slot.astimezone(UTC)


def tick_key(campaign_id: int, slot: datetime) -> str:
    return f"cam_tick:{campaign_id}:{utc_slot(slot).isoformat()}"


def publish_key(message_id: int, after: int | None = None) -> str:
    """``cam_publish:{message_id}``; a message queued again after its action ``after`` was
    halted or purged gets ``cam_publish:{message_id}:{after}``, one key per re-queue."""
    if after is None:
        return f"cam_publish:{message_id}"
    return f"cam_publish:{message_id}:{after}"


def metrics_key(campaign_id: int, day: date) -> str:
    return f"cam_metrics:{campaign_id}:{day.isoformat()}"


def leads_key(source: str, event_id: str) -> str:
    return f"cam_leads:{source}:{event_id}"
