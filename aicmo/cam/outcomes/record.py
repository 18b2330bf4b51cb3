"""Recording one email event, once: ``INSERT .. ON CONFLICT DO NOTHING`` on (provider, event_id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam.outcomes.models import EmailEvent, EventKind


def record_event(
    session: Session,
    *,
    provider: str,
    event_id: str,
    kind: EventKind,
    occurred_at: datetime,
    now: datetime,
    message_id: int | None = None,
    campaign_id: int | None = None,
    recipient: str | None = None,
    url: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """True if this event is new; False if (provider, event_id) was already recorded."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt: Insert = module.insert(EmailEvent).on_conflict_do_nothing(
        index_elements=["provider", "event_id"]
    )
    inserted = session.execute(
        stmt.values(
            provider=provider,
            event_id=event_id[:200],
            kind=kind.value,
            message_id=message_id,
            campaign_id=campaign_id,
            recipient=recipient[:320] if recipient else None,
            url=url,
            detail=detail,
            occurred_at_utc=occurred_at,
            created_at_utc=now,
        ).returning(EmailEvent.id)
    ).scalar()
    # RETURNING, not rowcount: a driver may report -1 for a conflict that inserted nothing.
    return inserted is not None
