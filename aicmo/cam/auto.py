"""``multichannel_batch``: draft and queue one batch across a campaign's channels now.

The original called this from its automation scripts, with its own parameters and a dict of
counts back; both are kept. The work is the tick's own machinery (lease, halt checks, daily
limit, review gate) with the batch spread round-robin over the channels each lead can be
reached on, instead of each step's first reachable channel.

The dict it returns (the original's keys first)::

    processed          leads handled in this batch (a message drafted, or found unreachable)
    multichannel_sent  messages queued for publishing, all channels (the workers send them)
    email_sent         ... of them on email
    linkedin_sent      ... of them on linkedin
    form_sent          ... of them on contact_form
    failed             leads no channel of the campaign can reach (closed as LOST)
    dry_run            as given
    drafted            messages drafted (DRAFT awaiting review, or auto-approved)
    awaiting_review    drafted messages a reviewer must approve before anything is sent
    by_channel         {channel: messages queued} (dry run: {channel: messages it would draft})
    outcome, reason    "done", "stopped" (campaign halted: reason) or "skipped" (lease held)

A dry run writes nothing, queues nothing and calls no LLM: it reports the leads the batch
would take and the channel each would be drafted on, with every "sent" count at 0 (as the
original's dry run did).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from aicmo.cam.campaigns import EMAIL, StepSpec, get_campaign
from aicmo.cam.drafting import choose_channel
from aicmo.cam.models import OutreachMessage, PublishStatus
from aicmo.cam.orchestrator import UNSET, due_leads, halt_reason, tick
from aicmo.db import utcnow
from aicmo.llm import TextGenerator

log = logging.getLogger(__name__)

LINKEDIN = "linkedin"
CONTACT_FORM = "contact_form"


def _counts(
    processed: int,
    queued: Counter[str],
    *,
    failed: int,
    dry_run: bool,
    drafted: int,
    awaiting_review: int,
    outcome: str,
    reason: str | None,
) -> dict[str, Any]:
    return {
        "processed": processed,
        "multichannel_sent": 0 if dry_run else sum(queued.values()),
        "email_sent": 0 if dry_run else queued[EMAIL],
        "linkedin_sent": 0 if dry_run else queued[LINKEDIN],
        "form_sent": 0 if dry_run else queued[CONTACT_FORM],
        "failed": failed,
        "dry_run": dry_run,
        "drafted": drafted,
        "awaiting_review": awaiting_review,
        "by_channel": dict(queued),
        "outcome": outcome,
        "reason": reason,
    }


def _plan(db: Session, campaign_id: int, batch_size: int | None, now: datetime) -> dict[str, Any]:
    """What a batch would do, read only."""
    stop = halt_reason(db, campaign_id)
    if stop:
        return _counts(
            0,
            Counter(),
            failed=0,
            dry_run=True,
            drafted=0,
            awaiting_review=0,
            outcome="stopped",
            reason=stop,
        )
    campaign = get_campaign(db, campaign_id)
    steps = [StepSpec.model_validate(step) for step in campaign.steps[: campaign.step_count]]
    planned: Counter[str] = Counter()
    unreachable = 0
    leads = [
        lead
        for lead in due_leads(db, campaign, now, batch_size or campaign.batch_size)
        if lead.step < len(steps)  # an exhausted sequence is closed by the tick, not drafted
    ]
    for index, lead in enumerate(leads):
        channel = choose_channel(campaign, steps[lead.step], lead, rotation=index)
        if channel is None:
            unreachable += 1
        else:
            planned[channel] += 1
    drafted = sum(planned.values())
    return _counts(
        len(leads),
        planned,
        failed=unreachable,
        dry_run=True,
        drafted=drafted,
        awaiting_review=drafted if campaign.requires_approval else 0,
        outcome="done",
        reason=None,
    )


def multichannel_batch(
    db: Session,
    campaign_id: int,
    email_sender: Any = None,
    batch_size: int | None = None,
    from_email: str | None = None,
    from_name: str | None = None,
    dry_run: bool = False,
    *,
    now: datetime | None = None,
    generator: TextGenerator | None = UNSET,
) -> dict[str, Any]:
    """Draft the next step for up to ``batch_size`` due leads (default: the campaign's),
    rotating channels, and queue what is approved; return the counts (module docstring).

    Runs in ``db``'s transaction: the caller commits (the queued publishes are sent after the
    commit). ``email_sender``, ``from_email`` and ``from_name`` are the original's: sending
    goes through CAMPAIGN_PUBLISH actions with the configured gateway and the campaign's
    sender address, so they are accepted and not used. ``dry_run=True`` writes nothing.
    """
    if email_sender is not None or from_email is not None or from_name is not None:
        log.info(
            "multichannel_batch: email_sender/from_email/from_name are not used (publishing "
            "uses the configured gateway and the campaign's sender)",
            extra={"campaign_id": campaign_id},
        )
    now = now or utcnow()
    if dry_run:
        return _plan(db, campaign_id, batch_size, now)
    # Messages of this batch are those above the campaign's highest id before it: the tick's
    # lease keeps any other tick of this campaign out meanwhile. Read on a connection of its
    # own, closed at once: on SQLite the tick takes its lease on a second connection, which
    # must find the database unlocked (see orchestrator.tick).
    bind = db.get_bind()
    with (bind.engine if isinstance(bind, Connection) else bind).connect() as conn:
        watermark = conn.scalar(
            select(func.coalesce(func.max(OutreachMessage.id), 0)).where(
                OutreachMessage.campaign_id == campaign_id
            )
        )
    result = tick(
        db,
        campaign_id,
        now,
        generator=generator,
        batch_size=batch_size,
        rotate_channels=True,
    )
    rows = db.execute(
        select(OutreachMessage.channel, OutreachMessage.publish_status).where(
            OutreachMessage.campaign_id == campaign_id, OutreachMessage.id > watermark
        )
    ).all()
    queued = Counter(channel for channel, status in rows if status == PublishStatus.QUEUED)
    return _counts(
        result.leads_considered,
        queued,
        failed=result.leads_unreachable,
        dry_run=False,
        drafted=result.messages_drafted,
        awaiting_review=sum(1 for _, status in rows if status == PublishStatus.DRAFT),
        outcome=result.outcome,
        reason=result.reason,
    )
