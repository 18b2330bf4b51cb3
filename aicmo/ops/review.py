"""The review gate's operations: list messages, approve (which queues the publish), reject,
and lead imports. Every decision names who made it (``reviewer``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aicmo.db import session_scope
from aicmo.ops.actions import iso

PUBLISH_STATUSES = ("DRAFT", "APPROVED", "REJECTED", "QUEUED", "PUBLISHED", "FAILED")


def message_dict(view: Any) -> dict[str, Any]:
    return {
        "id": view.id,
        "campaign_id": view.campaign_id,
        "lead_id": view.lead_id,
        "lead": view.lead,
        "step": view.step,
        "channel": view.channel,
        "subject": view.subject,
        "body": view.body,
        "publish_status": view.publish_status,
        "generated_by": view.generated_by,
        "reviewer": view.reviewer,
        "created_at_utc": iso(view.created_at_utc),
        "published_at_utc": iso(view.published_at_utc),
        "error": view.error,
    }


def list_messages(
    campaign_id: int | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Oldest first (the order a reviewer works through the queue)."""
    from aicmo.cam import review

    with session_scope() as session:
        return [
            message_dict(v)
            for v in review.list_messages(
                session, campaign_id, status.upper() if status else None, limit=limit, offset=offset
            )
        ]


def _decision(result: Any) -> dict[str, Any]:
    return {
        "message_id": result.message_id,
        "publish_status": result.publish_status,
        "queued": result.queued,
        "publish_action_id": result.publish_action_id,
    }


def approve(
    message_ids: Sequence[int], reviewer: str, note: str | None = None
) -> list[dict[str, Any]]:
    """DRAFT -> APPROVED; each publish is queued (CAMPAIGN_PUBLISH) when its campaign can send."""
    from aicmo.cam import review

    with session_scope() as session:
        return [_decision(review.approve(session, mid, reviewer, note)) for mid in message_ids]


def reject(
    message_ids: Sequence[int], reviewer: str, reason: str | None = None
) -> list[dict[str, Any]]:
    from aicmo.cam import review

    with session_scope() as session:
        return [_decision(review.reject(session, mid, reviewer, reason)) for mid in message_ids]


def import_leads(file: Path, campaign_id: int, source: str) -> dict[str, Any]:
    from aicmo.cam import leads as cam_leads
    from aicmo.gateways.leads import CsvLeadSource

    rows = CsvLeadSource(file).rows()
    with session_scope() as session:
        report = cam_leads.capture(session, campaign_id, source, rows).as_dict()
    return {"campaign_id": campaign_id, "rows": len(rows), **report}


def review_queue(
    campaign_id: int | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """The drafts waiting for a person, each with where it will go (the lead's address on
    the message's channel), for the console's review queue."""
    from sqlalchemy import select

    from aicmo.cam.models import Lead

    rows = list_messages(campaign_id, "DRAFT", limit=limit, offset=offset)
    lead_ids = {r["lead_id"] for r in rows}
    contacts: dict[int, Lead] = {}
    if lead_ids:
        with session_scope() as session:
            contacts = {
                lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(lead_ids)))
            }
    for row in rows:
        lead = contacts.get(row["lead_id"])
        address = None
        if lead is not None:
            address = {"email": lead.email, "linkedin": lead.linkedin_url}.get(
                row["channel"], lead.email or lead.linkedin_url or lead.phone
            )
        row["address"] = address
    return rows
