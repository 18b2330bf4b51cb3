"""Creating campaigns and changing their state (the API behind ``aicmo campaign ...``).

Every function works in the caller's session, validates before writing, and raises
:class:`InvalidCampaign` / :class:`CampaignNotFound` with a clear message.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicmo.cam.admission import CapSpec, SendWindowSpec
from aicmo.cam.clock import zone
from aicmo.cam.errors import CampaignNotFound, InvalidCampaign
from aicmo.cam.models import Campaign, CampaignMode, CampaignStatus, OutreachMessage, PublishStatus
from aicmo.cam.templates import check_template
from aicmo.db import utcnow
from aicmo.orchestration.queue import format_validation_error

log = logging.getLogger(__name__)

EMAIL = "email"
MAX_STEPS_PER_LEAD = 3


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Channel = Annotated[
    str, BeforeValidator(_lower), StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")
]
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class StepSpec(BaseModel):
    """One step of a sequence: what to send, and how long to wait before the next step."""

    model_config = ConfigDict(extra="forbid")

    body: Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
    subject: Annotated[str, StringConstraints(max_length=998, pattern=r"^[^\r\n]*$")] = ""
    # None: the first of the campaign's channels the lead can be reached on.
    channel: Channel | None = None
    # Extra guidance for the LLM; the rendered body is always its starting point.
    prompt: Annotated[str, StringConstraints(max_length=4000)] | None = None
    wait_minutes: float = Field(default=3 * 24 * 60, ge=0, le=365 * 24 * 60)

    @field_validator("body", "subject")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        check_template(value)
        return value


class CampaignSpec(BaseModel):
    """A campaign as a caller defines it; ``create_campaign`` stores it as DRAFT."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    timezone: str = "UTC"
    mode: CampaignMode = CampaignMode.PROOF
    tick_every_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    tick_daily_at: str | None = None
    batch_size: int = Field(default=50, ge=1, le=1000)
    daily_send_limit: int = Field(default=100, ge=0, le=1_000_000)
    channels: list[Channel] = Field(default_factory=lambda: [EMAIL], min_length=1, max_length=8)
    requires_approval: bool = True
    steps: list[StepSpec] = Field(min_length=1, max_length=20)
    max_steps: int = Field(default=MAX_STEPS_PER_LEAD, ge=1, le=20)
    from_address: (
        Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$")]
        | None
    ) = None
    # Links in its emails go through /c/TOKEN, counted and UTM-tagged (aicmo.cam.outcomes).
    click_tracking: bool = False

    send_window: SendWindowSpec | None = None
    frequency_caps: list[CapSpec] = Field(default_factory=list, max_length=8)

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("tick_daily_at")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value is not None and not _HH_MM.match(value):
            raise ValueError("must be a local time HH:MM, e.g. '09:30'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> CampaignSpec:
        if self.tick_every_minutes is None and self.tick_daily_at is None:
            self.tick_every_minutes = 60
        if self.tick_every_minutes is not None and self.tick_daily_at is not None:
            raise ValueError("give tick_every_minutes or tick_daily_at, not both")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels are listed twice")
        for number, step in enumerate(self.steps, start=1):
            if step.channel is not None and step.channel not in self.channels:
                raise ValueError(
                    f"step {number} uses channel {step.channel!r}, which is not one of the "
                    f"campaign's channels {self.channels}"
                )
            may_email = step.channel == EMAIL or (step.channel is None and EMAIL in self.channels)
            if may_email and not step.subject.strip():
                raise ValueError(f"step {number} may be sent by email: it needs a subject")
        return self


def parse_spec(spec: CampaignSpec | dict[str, Any]) -> CampaignSpec:
    if isinstance(spec, CampaignSpec):
        return spec
    try:
        return CampaignSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidCampaign(
            "invalid campaign: " + "; ".join(format_validation_error(exc))
        ) from None


def create_campaign(session: Session, spec: CampaignSpec | dict[str, Any]) -> Campaign:
    """Store a new campaign (DRAFT). ``activate`` starts it."""
    checked = parse_spec(spec)
    now = utcnow()
    campaign = Campaign(
        name=checked.name,
        status=CampaignStatus.DRAFT,
        mode=checked.mode,
        timezone=checked.timezone,
        tick_every_minutes=checked.tick_every_minutes,
        tick_daily_at=checked.tick_daily_at,
        batch_size=checked.batch_size,
        daily_send_limit=checked.daily_send_limit,
        kill_switch=False,
        channels=list(checked.channels),
        requires_approval=checked.requires_approval,
        steps=[step.model_dump(mode="json") for step in checked.steps],
        max_steps=checked.max_steps,
        from_address=checked.from_address,
        click_tracking=checked.click_tracking,
        send_window=checked.send_window.model_dump() if checked.send_window else None,
        frequency_caps=[cap.model_dump() for cap in checked.frequency_caps] or None,
        created_at_utc=now,
        updated_at_utc=now,
    )
    session.add(campaign)
    session.flush()
    log.info("campaign %s created", campaign.id, extra={"campaign_id": campaign.id})
    return campaign


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    """The campaign as the database has it now (``lock``: FOR UPDATE on PostgreSQL)."""
    query = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        query = query.with_for_update()
    found = session.scalars(query.execution_options(populate_existing=True)).first()
    if found is None:
        raise CampaignNotFound(campaign_id)
    return found


def list_campaigns(session: Session, status: CampaignStatus | str | None = None) -> list[Campaign]:
    query = select(Campaign).order_by(Campaign.id)
    if status is not None:
        query = query.where(Campaign.status == CampaignStatus(status))
    return list(session.scalars(query))


_TRANSITIONS: dict[CampaignStatus, set[CampaignStatus]] = {
    CampaignStatus.DRAFT: {CampaignStatus.ACTIVE, CampaignStatus.STOPPED},
    CampaignStatus.ACTIVE: {CampaignStatus.PAUSED, CampaignStatus.STOPPED},
    CampaignStatus.PAUSED: {CampaignStatus.ACTIVE, CampaignStatus.STOPPED},
    CampaignStatus.STOPPED: set(),
}


def set_status(session: Session, campaign_id: int, status: CampaignStatus | str) -> Campaign:
    """DRAFT -> ACTIVE <-> PAUSED, any -> STOPPED (final). Re-activating replays the
    publishes the halt stopped (see :func:`resume`)."""
    target = CampaignStatus(status)
    campaign = get_campaign(session, campaign_id, lock=True)
    current = CampaignStatus(campaign.status)
    if target is current:
        return campaign
    if target not in _TRANSITIONS[current]:
        raise InvalidCampaign(f"campaign {campaign_id} is {current}; it cannot become {target}")
    if target is CampaignStatus.ACTIVE:
        # An operator's resume is the explicit decision an automatic brake waits for; a brake
        # on the whole sending domain must be released first (aicmo.cam.outcomes.brakes).
        from aicmo.cam.outcomes.brakes import refuse_if_domain_braked

        refuse_if_domain_braked(session, campaign)
        campaign.brake_reason = None
        campaign.braked_at_utc = None
    campaign.status = target
    campaign.updated_at_utc = utcnow()
    session.flush()
    log.warning("campaign %s is now %s", campaign_id, target, extra={"campaign_id": campaign_id})
    if not campaign.halted:
        replay_halted_publishes(session, campaign_id)
    return campaign


def activate(session: Session, campaign_id: int) -> Campaign:
    return set_status(session, campaign_id, CampaignStatus.ACTIVE)


def pause(session: Session, campaign_id: int) -> Campaign:
    return set_status(session, campaign_id, CampaignStatus.PAUSED)


def stop(session: Session, campaign_id: int) -> Campaign:
    return set_status(session, campaign_id, CampaignStatus.STOPPED)


def set_kill_switch(session: Session, campaign_id: int, on: bool) -> Campaign:
    """The emergency stop: a running tick stops before its next lead and no publish sends.
    Turning it off replays the publishes it stopped."""
    campaign = get_campaign(session, campaign_id)
    campaign.kill_switch = on
    campaign.updated_at_utc = utcnow()
    session.flush()
    log.warning(
        "campaign %s kill switch %s",
        campaign_id,
        "ON" if on else "off",
        extra={"campaign_id": campaign_id},
    )
    if not campaign.halted:
        replay_halted_publishes(session, campaign_id)
    return campaign


def resume(session: Session, campaign_id: int) -> Campaign:
    """Kill switch off and ACTIVE again (from PAUSED), replaying the stopped publishes."""
    campaign = set_kill_switch(session, campaign_id, False)
    if campaign.status == CampaignStatus.PAUSED:
        campaign = set_status(session, campaign_id, CampaignStatus.ACTIVE)
    return campaign


def replay_halted_publishes(session: Session, campaign_id: int) -> list[int]:
    """Send again what the halt stopped, now that the campaign runs: the reconciliation
    (``aicmo.cam.reconcile``) hands back the QUEUED messages whose publish ended or was
    purged, and the APPROVED ones (a halted publish hands its message back) are queued
    under the daily limit. Works from the messages, so it needs no action row. Returns the
    ids of the messages queued."""
    # Imported here: reconcile builds on this module (get_campaign) and on publishing.
    from aicmo.cam.publishing import queue_approved
    from aicmo.cam.reconcile import reconcile_campaign

    now = utcnow()
    reconcile_campaign(session, campaign_id, now, queue=False)
    # Only what a halt (or a purge) handed back: the rest waits for the next tick as before.
    handed_back = list(
        session.scalars(
            select(OutreachMessage.id).where(
                OutreachMessage.campaign_id == campaign_id,
                OutreachMessage.publish_status == PublishStatus.APPROVED,
                OutreachMessage.publish_action_id.is_not(None),
            )
        )
    )
    queued = queue_approved(session, campaign_id, now, handed_back) if handed_back else []
    log.info(
        "campaign %s: %d message(s) queued again after the halt",
        campaign_id,
        len(queued),
        extra={"campaign_id": campaign_id},
    )
    return queued
