"""Campaigns: create, list, status changes, kill switch, ticks, today's sends and metrics."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from sqlalchemy import select

from aicmo.db import session_scope, utcnow
from aicmo.ops.actions import iso

CAMPAIGN_STATUSES = ("DRAFT", "ACTIVE", "PAUSED", "STOPPED")
log = logging.getLogger(__name__)


def _record(campaign_id: int, change: str, by: str | None) -> None:
    # cam_campaigns has no "changed by" column: the log line is the record of who did it.
    log.warning(
        "campaign %s: %s by %s",
        campaign_id,
        change,
        by or "unknown",
        extra={"campaign_id": campaign_id, "event": "CAMPAIGN_" + change.upper(), "by": by},
    )


def campaign_dict(campaign: Any) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "mode": campaign.mode,
        "timezone": campaign.timezone,
        "tick_every_minutes": campaign.tick_every_minutes,
        "tick_daily_at": campaign.tick_daily_at,
        "batch_size": campaign.batch_size,
        "daily_send_limit": campaign.daily_send_limit,
        "kill_switch": campaign.kill_switch,
        "channels": list(campaign.channels),
        "requires_approval": campaign.requires_approval,
        "steps": len(campaign.steps),
        "click_tracking": bool(campaign.click_tracking),
        "brake_reason": campaign.brake_reason,
        "braked_at_utc": iso(campaign.braked_at_utc),
        "created_at_utc": iso(campaign.created_at_utc),
    }


def create(spec: dict[str, Any], activate: bool = False) -> dict[str, Any]:
    from aicmo.cam import campaigns as cam

    with session_scope() as session:
        campaign = cam.create_campaign(session, spec)
        if activate:
            campaign = cam.activate(session, campaign.id)
        return campaign_dict(campaign)


def list_campaigns(status: str | None = None) -> list[dict[str, Any]]:
    from aicmo.cam import campaigns as cam

    with session_scope() as session:
        return [
            campaign_dict(c)
            for c in cam.list_campaigns(session, status.upper() if status else None)
        ]


def transition(campaign_id: int, verb: str, by: str | None = None) -> dict[str, Any]:
    """``activate``, ``pause``, ``resume`` (kill switch off and ACTIVE again) or ``stop``."""
    from aicmo.cam import campaigns as cam

    change = {
        "activate": cam.activate,
        "pause": cam.pause,
        "resume": cam.resume,
        "stop": cam.stop,
    }[verb]
    with session_scope() as session:
        row = campaign_dict(change(session, campaign_id))
    _record(campaign_id, verb, by)
    return row


def set_kill_switch(campaign_id: int, on: bool, by: str | None = None) -> dict[str, Any]:
    from aicmo.cam import campaigns as cam

    with session_scope() as session:
        row = campaign_dict(cam.set_kill_switch(session, campaign_id, on))
    _record(campaign_id, "kill" if on else "unkill", by)
    return row


def tick(campaign_id: int) -> dict[str, Any]:
    from aicmo.cam import campaigns as cam
    from aicmo.cam.schedule import enqueue_ticks

    with session_scope() as session:
        cam.get_campaign(session, campaign_id)
        enqueued = enqueue_ticks(session, [campaign_id], utcnow())[0]
    return {
        "campaign_id": campaign_id,
        "action_id": enqueued.action_id,
        "key": enqueued.idempotency_key,
    }


def detail(campaign_id: int, days: int = 30) -> dict[str, Any]:
    """One campaign with today's sends against its daily limit and its daily metrics."""
    from aicmo.cam import campaigns as cam
    from aicmo.cam.models import CampaignMetrics
    from aicmo.cam.outcomes.counts import row_outcomes
    from aicmo.cam.publishing import in_flight, published_today

    with session_scope() as session:
        campaign = cam.get_campaign(session, campaign_id)
        now = utcnow()
        data = campaign_dict(campaign)
        data["sent_today"] = published_today(session, campaign, now)
        data["in_flight"] = in_flight(session, campaign_id)
        data["metrics"] = [
            {
                "date": m.metric_date.isoformat(),
                "leads_captured": m.leads_captured,
                "messages_drafted": m.messages_drafted,
                "messages_approved": m.messages_approved,
                "messages_rejected": m.messages_rejected,
                "messages_published": m.messages_published,
                "messages_failed": m.messages_failed,
                **row_outcomes(m),
            }
            for m in reversed(
                list(
                    session.scalars(
                        select(CampaignMetrics)
                        .where(CampaignMetrics.campaign_id == campaign_id)
                        .order_by(CampaignMetrics.metric_date.desc())
                        .limit(days)
                    )
                )
            )
        ]
        return data


def metric_dates(rows: list[dict[str, Any]]) -> list[date]:
    return [date.fromisoformat(r["date"]) for r in rows]
