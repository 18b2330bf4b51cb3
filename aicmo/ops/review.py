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
        return [_decision(r) for r in review.approve_many(session, message_ids, reviewer, note)]


def reject(
    message_ids: Sequence[int], reviewer: str, reason: str | None = None
) -> list[dict[str, Any]]:
    from aicmo.cam import review

    with session_scope() as session:
        return [_decision(r) for r in review.reject_many(session, message_ids, reviewer, reason)]


def import_leads(file: Path, campaign_id: int, source: str) -> dict[str, Any]:
    from aicmo.cam import leads as cam_leads
    from aicmo.gateways.leads import CsvLeadSource

    rows = CsvLeadSource(file).rows()
    with session_scope() as session:
        report = cam_leads.capture(session, campaign_id, source, rows).as_dict()
    return {"campaign_id": campaign_id, "rows": len(rows), **report}


def review_queue(
    campaign_id: int | None = None, limit: int = 100, after_id: int | None = None
) -> list[dict[str, Any]]:
    """The drafts waiting for a person, oldest first, ``limit`` of them after ``after_id``
    (keyset pages: a page costs the same however deep), each with where it will go (the
    lead's address on the message's channel)."""
    from sqlalchemy import select

    from aicmo.cam.models import Lead, OutreachMessage, PublishStatus

    query = (
        select(OutreachMessage, Lead)
        .join(Lead, Lead.id == OutreachMessage.lead_id)
        .where(OutreachMessage.publish_status == PublishStatus.DRAFT)
        .order_by(OutreachMessage.id)
        .limit(max(1, min(limit, 1000)))
    )
    if campaign_id is not None:
        query = query.where(OutreachMessage.campaign_id == campaign_id)
    if after_id is not None:
        query = query.where(OutreachMessage.id > after_id)
    rows = []
    with session_scope() as session:
        for m, lead in session.execute(query):
            row = {
                "id": m.id,
                "campaign_id": m.campaign_id,
                "lead_id": m.lead_id,
                "lead": lead.display_name,
                "step": m.step,
                "channel": m.channel,
                "subject": m.subject,
                "body": m.body,
                "publish_status": m.publish_status,
                "generated_by": m.generated_by,
                "created_at_utc": iso(m.created_at_utc),
            }
            row["address"] = {"email": lead.email, "linkedin": lead.linkedin_url}.get(
                m.channel, lead.email or lead.linkedin_url or lead.phone
            )
            rows.append(row)
    return rows
