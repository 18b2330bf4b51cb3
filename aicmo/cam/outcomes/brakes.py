"""Automatic brakes: pause a campaign (or every campaign of a sending domain) whose complaint
or hard-bounce rate over its last sends passes a threshold.

Checked in the transaction that records a complaint or hard bounce, so the pause commits with
the event that tripped it: the next publish's gate sees a PAUSED campaign. The rate is over
the last ``AICMO_BRAKE_WINDOW_DELIVERIES`` sent emails (a sent email is the denominator:
not every provider reports deliveries), counted as at least ``AICMO_BRAKE_MIN_DELIVERIES``.
An operator resumes explicitly (``aicmo campaigns resume``), which clears the reason; a
domain brake is released with ``aicmo campaigns release-domain``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from aicmo.cam.campaigns import EMAIL
from aicmo.cam.errors import InvalidCampaign
from aicmo.cam.models import Campaign, CampaignStatus, OutreachMessage
from aicmo.cam.outcomes.models import EmailEvent, EventKind, SendingBrake
from aicmo.config import get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rates:
    sent: int
    complaints: int
    hard_bounces: int
    denominator: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.denominator

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.denominator


def sending_domain(campaign: Campaign) -> str:
    address = campaign.from_address or get_settings().cam_from_address
    return address.rpartition("@")[2].lower()


def _rates(session: Session, campaign_ids: list[int]) -> Rates:
    settings = get_settings()
    last = (
        select(OutreachMessage.id)
        .where(
            OutreachMessage.campaign_id.in_(campaign_ids),
            OutreachMessage.channel == EMAIL,
            OutreachMessage.published_at_utc.is_not(None),
        )
        .order_by(OutreachMessage.published_at_utc.desc())
        .limit(settings.brake_window_deliveries)
        .subquery()
    )
    sent = int(session.scalar(select(func.count()).select_from(last)) or 0)
    counts = dict(
        session.execute(
            select(EmailEvent.kind, func.count(distinct(EmailEvent.message_id)))
            .where(
                EmailEvent.message_id.in_(select(last.c.id)),
                EmailEvent.kind.in_([EventKind.COMPLAINT, EventKind.BOUNCE_HARD]),
            )
            .group_by(EmailEvent.kind)
        ).all()
    )
    return Rates(
        sent=sent,
        complaints=int(counts.get(EventKind.COMPLAINT.value, 0)),
        hard_bounces=int(counts.get(EventKind.BOUNCE_HARD.value, 0)),
        denominator=max(sent, settings.brake_min_deliveries, 1),
    )


def _verdict(rates: Rates) -> str | None:
    settings = get_settings()
    if rates.complaint_rate > settings.brake_complaint_rate:
        return (
            f"complaint rate {rates.complaint_rate:.2%} ({rates.complaints} over the last "
            f"{rates.sent} sends, counted as {rates.denominator}) is above "
            f"{settings.brake_complaint_rate:.2%}"
        )
    if rates.hard_bounce_rate > settings.brake_hard_bounce_rate:
        return (
            f"hard-bounce rate {rates.hard_bounce_rate:.2%} ({rates.hard_bounces} over the last "
            f"{rates.sent} sends, counted as {rates.denominator}) is above "
            f"{settings.brake_hard_bounce_rate:.2%}"
        )
    return None


def _pause(session: Session, campaign: Campaign, reason: str, now: datetime) -> bool:
    if campaign.status != CampaignStatus.ACTIVE:
        return False
    campaign.status = CampaignStatus.PAUSED
    campaign.brake_reason = reason[:2000]
    campaign.braked_at_utc = now
    campaign.updated_at_utc = now
    log.warning(
        "campaign %s paused by its brake: %s",
        campaign.id,
        reason,
        extra={"campaign_id": campaign.id, "event": "CAMPAIGN_BRAKED"},
    )
    return True


def check(session: Session, campaign_id: int, now: datetime) -> str | None:
    """Pause the campaign (and its sending domain) if a rate is over; returns the reason."""
    campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
    if campaign is None:
        return None
    reason = _verdict(_rates(session, [campaign.id]))
    if reason is not None:
        _pause(session, campaign, f"automatic brake: {reason}", now)
    if get_settings().brake_domain_enabled:
        domain_reason = check_domain(session, sending_domain(campaign), now)
        reason = reason or domain_reason
    session.flush()
    return reason


def _domain_campaigns(session: Session, domain: str) -> list[Campaign]:
    return [c for c in session.scalars(select(Campaign)) if sending_domain(c) == domain]


def check_domain(session: Session, domain: str, now: datetime) -> str | None:
    campaigns = _domain_campaigns(session, domain)
    if len(campaigns) < 2:  # one campaign's own brake already covers its domain
        return None
    reason = _verdict(_rates(session, [c.id for c in campaigns]))
    if reason is None:
        return None
    brake = session.scalar(select(SendingBrake).where(SendingBrake.domain == domain))
    if brake is None:
        session.add(SendingBrake(domain=domain, reason=reason, braked_at_utc=now))
    elif brake.released_at_utc is not None:
        brake.reason, brake.braked_at_utc = reason, now
        brake.released_at_utc = brake.released_by = None
    for campaign in campaigns:
        _pause(session, campaign, f"sending domain {domain} braked: {reason}", now)
    return reason


def active_domain_brake(session: Session, domain: str) -> SendingBrake | None:
    return session.scalar(
        select(SendingBrake).where(
            SendingBrake.domain == domain, SendingBrake.released_at_utc.is_(None)
        )
    )


def refuse_if_domain_braked(session: Session, campaign: Campaign) -> None:
    domain = sending_domain(campaign)
    brake = active_domain_brake(session, domain)
    if brake is not None:
        raise InvalidCampaign(
            f"sending domain {domain} is braked ({brake.reason}); release it first "
            f"(aicmo campaigns release-domain {domain})"
        )


def release_domain(session: Session, domain: str, by: str, now: datetime) -> bool:
    brake = active_domain_brake(session, domain.strip().lower())
    if brake is None:
        return False
    brake.released_at_utc, brake.released_by = now, by[:128]
    session.flush()
    return True


def list_domain_brakes(session: Session) -> list[SendingBrake]:
    return list(
        session.scalars(
            select(SendingBrake)
            .where(SendingBrake.released_at_utc.is_(None))
            .order_by(SendingBrake.domain)
        )
    )
