"""Outcomes counted per message and per campaign day, and the rates derived from them.

A message counts once per kind (distinct messages), so a provider reporting two opens of one
email, or a retried webhook, does not inflate a rate. A campaign day is the campaign's local
day in which the event was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from aicmo.cam.outcomes.models import EmailEvent, EventKind

# cam_campaign_metrics column <- event kind
COLUMNS: dict[str, EventKind] = {
    "delivered": EventKind.DELIVERED,
    "bounced_hard": EventKind.BOUNCE_HARD,
    "bounced_soft": EventKind.BOUNCE_SOFT,
    "complained": EventKind.COMPLAINT,
    "unsubscribed": EventKind.UNSUBSCRIBE,
    "opened": EventKind.OPEN,
    "clicked": EventKind.CLICK,
}


def day_counts(
    session: Session, campaign_id: int, start: datetime, end: datetime
) -> dict[str, int]:
    """Distinct messages per outcome recorded in [start, end), by metrics column."""
    rows = dict(
        session.execute(
            select(EmailEvent.kind, func.count(distinct(EmailEvent.message_id)))
            .where(
                EmailEvent.campaign_id == campaign_id,
                EmailEvent.created_at_utc >= start,
                EmailEvent.created_at_utc < end,
            )
            .group_by(EmailEvent.kind)
        ).all()
    )
    return {column: int(rows.get(kind.value, 0)) for column, kind in COLUMNS.items()}


def message_counts(session: Session, message_id: int) -> dict[str, int]:
    """Events of each kind recorded for one message (clicks: one per link)."""
    rows = dict(
        session.execute(
            select(EmailEvent.kind, func.count())
            .where(EmailEvent.message_id == message_id)
            .group_by(EmailEvent.kind)
        ).all()
    )
    return {kind.value: int(rows.get(kind.value, 0)) for kind in EventKind}


def rates(sent: int, counts: Mapping[str, int]) -> dict[str, float | None]:
    """Rates over the emails sent that day (opens and clicks over those delivered, when any
    delivery was reported); None when there is nothing to divide by."""

    def ratio(part: int, whole: int) -> float | None:
        return round(part / whole, 6) if whole else None

    delivered = counts.get("delivered", 0)
    return {
        "delivery_rate": ratio(delivered, sent),
        "hard_bounce_rate": ratio(counts.get("bounced_hard", 0), sent),
        "soft_bounce_rate": ratio(counts.get("bounced_soft", 0), sent),
        "complaint_rate": ratio(counts.get("complained", 0), sent),
        "unsubscribe_rate": ratio(counts.get("unsubscribed", 0), sent),
        "open_rate": ratio(counts.get("opened", 0), delivered or sent),
        "click_rate": ratio(counts.get("clicked", 0), delivered or sent),
    }


def row_outcomes(row: Any) -> dict[str, Any]:
    """The email outcomes of a cam_campaign_metrics row: sent, the counts and the rates."""
    sent = int((row.by_channel or {}).get("email", {}).get("published", 0))
    counts = {column: int(getattr(row, column) or 0) for column in COLUMNS}
    return {"email_sent": sent, **counts, **rates(sent, counts)}
