"""Stopping an address everywhere: the suppression list, and DNC on every campaign's lead."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from aicmo.cam.leads import normalise_email
from aicmo.cam.models import Consent, Lead, SuppressionKind
from aicmo.cam.suppressions import suppress


def stop_address(
    session: Session, email: str, reason: str, now: datetime, *, dnc: bool = True
) -> int:
    """Suppress ``email`` and (``dnc``) mark DNC its lead in every campaign. Returns the
    number of leads marked. The review gate then refuses every draft and queued publish to
    the address (``aicmo.cam.publishing.open_publish`` checks DNC and the list)."""
    address = normalise_email(email)
    suppress(session, SuppressionKind.EMAIL, address, reason=reason[:500])
    if not dnc:
        return 0
    result = session.execute(
        update(Lead)
        .where(Lead.email == address, Lead.consent != Consent.DNC)
        .values(consent=Consent.DNC, updated_at_utc=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
