"""The campaign action types: CAMPAIGN_TICK, CAMPAIGN_PUBLISH, CAMPAIGN_FETCH_METRICS and
CAMPAIGN_CAPTURE_LEADS.

Each validates its payload and hands the work to ``aicmo.cam``; this module adds the I/O
with the outside world (email and social gateways, the metrics source). Keys, set by the
callers in ``aicmo.cam``: ``cam_tick:{campaign_id}:{slot_utc_iso}``,
``cam_publish:{message_id}``, ``cam_metrics:{campaign_id}:{date}``,
``cam_leads:{source}:{event_id}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from aicmo.cam import keys, leads, metrics, orchestrator, publishing
from aicmo.cam.campaigns import EMAIL, get_campaign
from aicmo.cam.leads import MAX_LEADS_PER_CAPTURE, SOURCE_PATTERN
from aicmo.cam.models import CampaignMode
from aicmo.cam.outcomes import counts as outcome_counts
from aicmo.cam.outcomes import mail as outcomes_mail
from aicmo.db import utcnow
from aicmo.gateways.factory import email_sender, social_poster
from aicmo.gateways.metrics import metrics_source
from aicmo.gateways.ports import OutgoingEmail, SendResult, SocialPost
from aicmo.orchestration.adapters._common import original_keys, run_number
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.direct import run_direct
from aicmo.orchestration.errors import PermanentError, RealRunUnconfigured
from aicmo.orchestration.registry import registry

__all__ = [
    "CampaignCaptureLeadsPayload",
    "CampaignFetchMetricsPayload",
    "CampaignPublishPayload",
    "CampaignTickPayload",
    "campaign_capture_leads",
    "campaign_fetch_metrics",
    "campaign_publish",
    "campaign_tick",
    "handle_campaign_capture_leads",
    "handle_campaign_fetch_metrics",
    "handle_campaign_publish",
    "handle_campaign_tick",
]

Id = Annotated[int, Field(gt=0, lt=2**63)]


class CampaignTickPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: Id
    slot: AwareDatetime | None = None  # the cadence slot beat enqueued it for (recorded)
    # The original's tick payload also carried batch_size and mode: here the campaign's own
    # batch size and mode (and AICMO_PROOF_MODE) decide, so they are dropped.
    accept_original_keys: ClassVar[Any] = original_keys(ignored={"batch_size", "mode"})


class CampaignPublishPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_id: Id

    # The original's publish payload also carried the platform, content and audience: here
    # the approved message row decides all three (the review gate), so they are dropped.
    accept_original_keys: ClassVar[Any] = original_keys(
        ignored={"platform", "content", "audience"},
        renamed={"outreach_message_id": "message_id"},
    )


class CampaignFetchMetricsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: Id
    date: dt.date  # the campaign's local date

    accept_original_keys: ClassVar[Any] = original_keys()


class CampaignCaptureLeadsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: Id
    source: Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)]
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=160)] | None = None
    # Each lead is validated on its own by the handler: one bad lead is reported, not fatal.
    leads: list[Any] = Field(min_length=1, max_length=MAX_LEADS_PER_CAPTURE)

    accept_original_keys: ClassVar[Any] = original_keys()


# -- CAMPAIGN_TICK -------------------------------------------------------------------------


@registry.action(
    keys.TICK,
    payload=CampaignTickPayload,
)
def campaign_tick(ctx: ActionContext, payload: CampaignTickPayload) -> dict[str, Any]:
    """Run one tick of a campaign: draft due steps, queue approved messages."""
    # The campaign lease outlives the action's own lease: by then the worker is gone.
    lease = registry.get(keys.TICK).lease_seconds()
    result = orchestrator.tick(
        ctx.session,
        payload.campaign_id,
        utcnow(),
        lease_seconds=lease,
        action_id=ctx.action_id,
        slot=payload.slot,
    )
    return result.as_dict()


# -- CAMPAIGN_PUBLISH ----------------------------------------------------------------------


@registry.action(
    keys.PUBLISH,
    payload=CampaignPublishPayload,
)
def campaign_publish(ctx: ActionContext, payload: CampaignPublishPayload) -> dict[str, Any]:
    """Publish one APPROVED outreach message (the review gate).

    Admitted and reserved in a short transaction, sent with none open, recorded with SUCCESS
    (see ``aicmo.cam.publishing``).
    """
    with ctx.guarded() as session:
        opened = publishing.begin_publish(
            session, payload.message_id, ctx.action_id, utcnow(), ctx.proof_mode
        )
    if isinstance(opened, publishing.Refused):
        raise opened.error
    job = opened
    try:
        sent = _send(ctx, job)
    except BaseException as exc:
        try:
            with ctx.guarded() as session:
                publishing.release_publish(session, job, ctx.action_id, utcnow(), exc)
        except Exception:
            # The reservation then waits for the retry (or the reconciliation) to clear it.
            ctx.log.exception("message %s: could not release its reservation", job.message_id)
        raise
    publishing.record_published(
        ctx.session,
        job,
        sent.external_id,
        ctx.action_id,
        utcnow(),
        provider_message_id=sent.provider_message_id,
    )
    return {
        "message_id": job.message_id,
        "campaign_id": job.campaign_id,
        "lead_id": job.lead_id,
        "channel": job.channel,
        "external_id": sent.external_id,
        "proof_mode": job.proof_mode,
    }


def _send(ctx: ActionContext, job: publishing.PublishJob) -> SendResult:
    if job.channel == EMAIL:
        assert job.email is not None  # begin_publish refused the message otherwise
        sender = email_sender(job.proof_mode, ctx.artifacts)
        # Every outreach email: one-click unsubscribe (RFC 8058), the visible link, and the
        # campaign's tracked links.
        mail = outcomes_mail.decorate(
            body=job.body,
            message_id=job.message_id,
            lead_id=job.lead_id,
            campaign_id=job.campaign_id,
            campaign_name=job.campaign_name,
            from_address=job.from_address,
            click_tracking=job.click_tracking,
        )
        return sender.send(
            OutgoingEmail(
                to=job.email,
                subject=job.subject or job.campaign_name,
                body=mail.body,
                from_address=job.from_address,
                headers={
                    "X-Aicmo-Campaign": str(job.campaign_id),
                    "X-Aicmo-Message": str(job.message_id),
                    **mail.headers,
                },
            ),
            ctx.idempotency_key,
        )
    poster = social_poster(job.channel, job.proof_mode, ctx.artifacts, campaign_id=job.campaign_id)
    return poster.post(
        SocialPost(
            job.channel,
            job.body,
            job.audience,
            created_at=ctx.action.created_at_utc,
            attempt=run_number(ctx),
        ),
        ctx.idempotency_key,
    )


# -- CAMPAIGN_FETCH_METRICS ----------------------------------------------------------------


def _posts_of(ids: list[str]) -> Callable[[int, dt.date], list[str]]:
    return lambda _campaign_id, _day: ids


@registry.action(
    keys.FETCH_METRICS,
    payload=CampaignFetchMetricsPayload,
)
def campaign_fetch_metrics(
    ctx: ActionContext, payload: CampaignFetchMetricsPayload
) -> dict[str, Any]:
    """Collect one campaign's metrics for one local date (upserted).

    The platforms are asked first, with no transaction open (a short read of the day's
    posts, then the network); our own counts and the upsert follow in the action's own."""
    with ctx.guarded() as read:
        campaign = get_campaign(read, payload.campaign_id)
        proof = ctx.proof_mode or campaign.mode == CampaignMode.PROOF
        channels = list(campaign.channels)
        posts = {
            channel: metrics.published_posts(read, payload.campaign_id, channel, payload.date)
            for channel in channels
            if channel != EMAIL
        }

    reported: dict[str, Any] = {}
    for channel in channels:
        try:
            source = metrics_source(
                channel,
                proof,
                ctx.artifacts,
                campaign_id=payload.campaign_id,
                posts_of=_posts_of(posts[channel]) if channel in posts else None,
            )
        except RealRunUnconfigured as exc:
            # Our own counts are worth keeping without a provider's numbers.
            reported[channel] = {"source": "unconfigured", "error": str(exc)}
            continue
        try:
            report = source.fetch(payload.campaign_id, payload.date, ctx.idempotency_key)
        except PermanentError as exc:
            # A refused account loses that channel's numbers, not the day's own counts; a
            # transient error (rate limit, outage) retries the whole fetch instead.
            reported[channel] = {"source": "failed", "error": str(exc)}
            continue
        reported[channel] = {"source": report.source, "metrics": dict(report.metrics)}
        if report.per_item:
            reported[channel]["posts"] = report.per_item

    def external(campaign_id: int, day: dt.date, internal: Mapping[str, int]) -> dict[str, Any]:
        return reported

    row = metrics.collect(
        ctx.session,
        payload.campaign_id,
        payload.date,
        external=external,
        action_id=ctx.action_id,
    )
    return {
        "campaign_id": row.campaign_id,
        "date": row.metric_date.isoformat(),
        "leads_captured": row.leads_captured,
        "messages_drafted": row.messages_drafted,
        "messages_approved": row.messages_approved,
        "messages_rejected": row.messages_rejected,
        "messages_published": row.messages_published,
        "messages_failed": row.messages_failed,
        "by_channel": row.by_channel,
        "external": row.external,
        **outcome_counts.row_outcomes(row),
    }


# -- CAMPAIGN_CAPTURE_LEADS ----------------------------------------------------------------


@registry.action(
    keys.CAPTURE_LEADS,
    payload=CampaignCaptureLeadsPayload,
)
def campaign_capture_leads(
    ctx: ActionContext, payload: CampaignCaptureLeadsPayload
) -> dict[str, Any]:
    """Ingest leads: validate each, merge duplicates by identity hash, report the invalid."""
    report = leads.capture(ctx.session, payload.campaign_id, payload.source, payload.leads)
    return {
        "campaign_id": payload.campaign_id,
        "source": payload.source,
        "event_id": payload.event_id,
        **report.as_dict(),
    }


# -- the original's entry points: run one waiting action now, as a worker would -------------
# Each commits ``session`` first and records the outcome (see aicmo.orchestration.direct).


def handle_campaign_tick(
    session: Session, action_id: int, payload: dict[str, Any], proof_mode: bool = False
) -> dict[str, Any]:
    return run_direct(session, keys.TICK, action_id, payload, proof_mode)


def handle_campaign_publish(
    session: Session, action_id: int, payload: dict[str, Any], proof_mode: bool = False
) -> dict[str, Any]:
    """Live mode with no configured gateway records FAILED and raises ``RealRunUnconfigured``."""
    return run_direct(session, keys.PUBLISH, action_id, payload, proof_mode)


def handle_campaign_fetch_metrics(
    session: Session, action_id: int, payload: dict[str, Any], proof_mode: bool = False
) -> dict[str, Any]:
    return run_direct(session, keys.FETCH_METRICS, action_id, payload, proof_mode)


def handle_campaign_capture_leads(
    session: Session, action_id: int, payload: dict[str, Any], proof_mode: bool = False
) -> dict[str, Any]:
    return run_direct(session, keys.CAPTURE_LEADS, action_id, payload, proof_mode)
