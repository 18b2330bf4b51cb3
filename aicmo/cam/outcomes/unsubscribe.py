"""One-click unsubscribe (RFC 8058): a genuine ``/u/TOKEN`` stops the address at once.

Suppressed, DNC in every campaign, and recorded as an ``unsubscribe`` event of its message
(event id ``unsubscribe:{message_id}``, so a second click changes nothing), all in the
caller's one transaction: when it commits, no later publish to the address can pass the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from aicmo.cam.models import Consent, Lead, OutreachMessage
from aicmo.cam.outcomes import tokens
from aicmo.cam.outcomes.addresses import stop_address
from aicmo.cam.outcomes.models import EventKind
from aicmo.cam.outcomes.record import record_event

PROVIDER = "aicmo"


class UnknownRecipient(tokens.BadToken):
    """A genuine token whose message or lead no longer exists (or does not match)."""


@dataclass(frozen=True)
class Unsubscribed:
    message_id: int
    campaign_id: int
    address: str | None  # masked, for the confirmation page
    first_time: bool


def mask(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def check(session: Session, token: str) -> tuple[tokens.TokenClaims, Lead]:
    """The claims of a genuine unsubscribe token and its lead (nothing written)."""
    claims = tokens.read(token, "u")
    message = session.get(OutreachMessage, claims.message_id)
    if (
        message is None
        or message.lead_id != claims.lead_id
        or message.campaign_id != claims.campaign_id
    ):
        raise UnknownRecipient("this unsubscribe link names no message we sent")
    lead = session.get(Lead, claims.lead_id)
    if lead is None:
        raise UnknownRecipient("this unsubscribe link names no message we sent")
    return claims, lead


def unsubscribe(session: Session, token: str, now: datetime) -> Unsubscribed:
    claims, lead = check(session, token)
    if lead.email:
        stop_address(session, lead.email, f"unsubscribed (message {claims.message_id})", now)
    else:  # no address to suppress: this lead alone stops
        lead.consent = Consent.DNC
        lead.updated_at_utc = now
    first = record_event(
        session,
        provider=PROVIDER,
        event_id=f"unsubscribe:{claims.message_id}",
        kind=EventKind.UNSUBSCRIBE,
        occurred_at=now,
        now=now,
        message_id=claims.message_id,
        campaign_id=claims.campaign_id,
        recipient=lead.email,
    )
    session.flush()
    return Unsubscribed(
        claims.message_id, claims.campaign_id, mask(lead.email) if lead.email else None, first
    )
