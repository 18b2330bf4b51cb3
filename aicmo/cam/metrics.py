"""One campaign's metrics for one local date: our own counts plus what a MetricsSource says.

The row is upserted on (campaign, date): collecting a date again updates it, never adds a
second row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Insert, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from aicmo.cam.campaigns import get_campaign
from aicmo.cam.clock import day_bounds
from aicmo.cam.models import CampaignMetrics, Lead, OutreachMessage
from aicmo.db import utcnow

COUNTERS = ("drafted", "approved", "rejected", "published", "failed")

# External numbers for (campaign id, local date, our counts): a MetricsSource's fetch.
ExternalFetch = Callable[[int, date, Mapping[str, int]], Mapping[str, Any]]


@dataclass(frozen=True)
class DailyCounts:
    leads_captured: int
    messages: dict[str, int]  # counter -> count
    by_channel: dict[str, dict[str, int]]  # channel -> counter -> count

    def flat(self) -> dict[str, int]:
        return {
            "leads_captured": self.leads_captured,
            **{f"messages_{k}": v for k, v in self.messages.items()},
        }


def _when(counter: str) -> InstrumentedAttribute[datetime | None] | InstrumentedAttribute[datetime]:
    return {
        "drafted": OutreachMessage.created_at_utc,
        "approved": OutreachMessage.approved_at_utc,
        "rejected": OutreachMessage.rejected_at_utc,
        "published": OutreachMessage.published_at_utc,
        "failed": OutreachMessage.failed_at_utc,
    }[counter]


def count_day(session: Session, campaign_id: int, day: date) -> DailyCounts:
    """What happened in the campaign's local ``day``, from our tables."""
    campaign = get_campaign(session, campaign_id)
    start, end = day_bounds(day, campaign.timezone)
    captured = session.scalar(
        select(func.count())
        .select_from(Lead)
        .where(
            Lead.campaign_id == campaign_id, Lead.created_at_utc >= start, Lead.created_at_utc < end
        )
    )
    messages: dict[str, int] = {}
    by_channel: dict[str, dict[str, int]] = {}
    for counter in COUNTERS:
        when = _when(counter)
        rows = session.execute(
            select(OutreachMessage.channel, func.count())
            .where(OutreachMessage.campaign_id == campaign_id, when >= start, when < end)
            .group_by(OutreachMessage.channel)
        ).all()
        messages[counter] = sum(int(n) for _, n in rows)
        for channel, n in rows:
            by_channel.setdefault(channel, dict.fromkeys(COUNTERS, 0))[counter] = int(n)
    return DailyCounts(int(captured or 0), messages, by_channel)


def _upsert(session: Session) -> Any:
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(CampaignMetrics)


def collect(
    session: Session,
    campaign_id: int,
    day: date,
    *,
    external: ExternalFetch | None = None,
    action_id: int | None = None,
    now: datetime | None = None,
) -> CampaignMetrics:
    """Count ``day`` and upsert its row (in the caller's transaction)."""
    now = now or utcnow()
    # Failed publishes become FAILED messages before they are counted.
    from aicmo.cam.reconcile import reconcile_campaign  # reconcile builds on publishing

    reconcile_campaign(session, campaign_id, now, queue=False)
    counts = count_day(session, campaign_id, day)
    flat = counts.flat()
    reported = dict(external(campaign_id, day, flat)) if external else {}
    # The email outcomes of the day (provider events, unsubscribes, clicks).
    from aicmo.cam.outcomes.counts import day_counts  # outcomes builds on campaigns

    start, end = day_bounds(day, get_campaign(session, campaign_id).timezone)
    values = {
        **flat,
        **day_counts(session, campaign_id, start, end),
        "by_channel": counts.by_channel,
        "external": reported,
        "action_id": action_id,
        "collected_at_utc": now,
    }
    insert: Insert = _upsert(session).values(
        campaign_id=campaign_id, metric_date=day, created_at_utc=now, **values
    )
    session.execute(
        insert.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=["campaign_id", "metric_date"], set_=values
        )
    )
    row = session.scalars(
        select(CampaignMetrics)
        .where(CampaignMetrics.campaign_id == campaign_id, CampaignMetrics.metric_date == day)
        .execution_options(populate_existing=True)
    ).one()
    return row


def get_metrics(session: Session, campaign_id: int, day: date) -> CampaignMetrics | None:
    return session.scalars(
        select(CampaignMetrics).where(
            CampaignMetrics.campaign_id == campaign_id, CampaignMetrics.metric_date == day
        )
    ).first()


def published_posts(session: Session, campaign_id: int, channel: str, day: date) -> list[str]:
    """External ids of the messages the campaign published on ``channel`` in its local
    ``day`` (what a platform is asked for numbers about)."""
    campaign = get_campaign(session, campaign_id)
    start, end = day_bounds(day, campaign.timezone)
    return [
        str(external_id)
        for external_id in session.scalars(
            select(OutreachMessage.external_id)
            .where(
                OutreachMessage.campaign_id == campaign_id,
                OutreachMessage.channel == channel,
                OutreachMessage.published_at_utc >= start,
                OutreachMessage.published_at_utc < end,
                OutreachMessage.external_id.is_not(None),
            )
            .order_by(OutreachMessage.id)
        )
    ]
