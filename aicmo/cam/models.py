"""The campaign tables: campaigns, their leads, outreach messages, runs, metrics, suppressions.

Every datetime is a tz-aware UTC ``UTCDateTime``; "local" dates (daily limit, metrics) are
computed from the campaign's IANA timezone, never stored as naive times.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from aicmo.db import Base, JSONType, UTCDateTime, utcnow
from aicmo.orchestration.models import BigIntId


class CampaignStatus(StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"


class CampaignMode(StrEnum):
    PROOF = "proof"  # artifacts only, whatever AICMO_PROOF_MODE says
    LIVE = "live"


class LeadStatus(StrEnum):
    NEW = "NEW"
    CONTACTED = "CONTACTED"
    REPLIED = "REPLIED"
    CONVERTED = "CONVERTED"
    LOST = "LOST"


# Statuses the sequence still works on; the others are out of the automated flow.
OPEN_LEAD_STATUSES = (LeadStatus.NEW, LeadStatus.CONTACTED)


class Consent(StrEnum):
    UNKNOWN = "UNKNOWN"
    CONSENTED = "CONSENTED"
    DNC = "DNC"  # do not contact: sticky, no later capture undoes it


class PublishStatus(StrEnum):
    DRAFT = "DRAFT"  # waits for a reviewer
    APPROVED = "APPROVED"  # may be published; waits for room under the daily limit
    REJECTED = "REJECTED"
    QUEUED = "QUEUED"  # a CAMPAIGN_PUBLISH action is on its way
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"  # its CAMPAIGN_PUBLISH action failed for good (FAILED/DLQ/CANCELLED)


class RunStatus(StrEnum):
    RUNNING = "RUNNING"  # holds the campaign's lease until lease_expires_at_utc
    DONE = "DONE"
    STOPPED = "STOPPED"  # the campaign was not ACTIVE or its kill switch was on
    FAILED = "FAILED"


class SuppressionKind(StrEnum):
    EMAIL = "email"
    DOMAIN = "domain"


def _values(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


def _partial(where: str) -> dict[str, Any]:
    return {"postgresql_where": text(where), "sqlite_where": text(where)}


# The tick's due-lead question, answered from a small partial index: only the open leads
# the sequence still acts on, ordered by when they are due. (DNC and under-review leads are
# rare and filtered on the rows: a boolean in the predicate would not match on SQLite.)
DUE_LEADS_WHERE = "status IN ('NEW', 'CONTACTED') AND next_action_at_utc IS NOT NULL"
LIVE_RUN_WHERE = "status = 'RUNNING'"


class Campaign(Base):
    __tablename__ = "cam_campaigns"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT)
    mode: Mapped[str] = mapped_column(String(8), default=CampaignMode.PROOF)
    timezone: Mapped[str] = mapped_column(String(64))
    # Cadence: every N minutes, or once a day at a local HH:MM (exactly one is set).
    tick_every_minutes: Mapped[int | None] = mapped_column(Integer)
    tick_daily_at: Mapped[str | None] = mapped_column(String(5))
    batch_size: Mapped[int] = mapped_column(Integer)
    daily_send_limit: Mapped[int] = mapped_column(Integer)
    kill_switch: Mapped[bool] = mapped_column(Boolean, default=False)
    channels: Mapped[list[str]] = mapped_column(JSONType)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=True)
    # [{"channel", "subject", "body", "prompt", "wait_minutes"}], validated by StepSpec.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    max_steps: Mapped[int] = mapped_column(Integer, default=3)
    from_address: Mapped[str | None] = mapped_column(String(320))
    # Links in its emails go through /c/TOKEN (counted, UTM-tagged): aicmo.cam.outcomes.links.
    click_tracking: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set when an automatic brake paused the campaign (aicmo.cam.outcomes.brakes); cleared by
    # the operator's resume.
    brake_reason: Mapped[str | None] = mapped_column(Text)
    braked_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # {"start": "09:00", "end": "17:30", "days": ["mon", ..]}: when a message may arrive, in
    # the lead's local time (see aicmo.cam.admission). None: any time.
    send_window: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # [{"max": N, "hours": H}]: per-person caps on top of the global ones (stricter only).
    frequency_caps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        CheckConstraint(f"status IN ({_values(CampaignStatus)})", name="status_valid"),
        CheckConstraint(f"mode IN ({_values(CampaignMode)})", name="mode_valid"),
        CheckConstraint(
            "(tick_every_minutes IS NULL) <> (tick_daily_at IS NULL)", name="one_cadence"
        ),
        CheckConstraint(
            "batch_size >= 1 AND daily_send_limit >= 0 AND max_steps >= 1", name="limits_valid"
        ),
        Index("ix_cam_campaigns_status", "status"),
    )

    @property
    def step_count(self) -> int:
        """Steps a lead goes through: the sequence, capped by max_steps."""
        return min(len(self.steps), self.max_steps)

    @property
    def halted(self) -> bool:
        return self.kill_switch or self.status != CampaignStatus.ACTIVE

    def __repr__(self) -> str:
        return f"<Campaign {self.id} {self.name!r} {self.status}>"


class Lead(Base):
    __tablename__ = "cam_leads"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cam_campaigns.id", ondelete="CASCADE")
    )
    identity_hash: Mapped[str] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    email_domain: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(32))
    linkedin_url: Mapped[str | None] = mapped_column(String(500))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    company: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    source: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=LeadStatus.NEW)
    consent: Mapped[str] = mapped_column(String(16), default=Consent.UNKNOWN)
    requires_human_review: Mapped[bool] = mapped_column(Boolean, default=False)
    # Steps drafted so far (0: none). The next draft is step + 1.
    step: Mapped[int] = mapped_column(Integer, default=0)
    # When the sequence next acts on this lead; NULL while a drafted message is pending.
    next_action_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_contacted_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("campaign_id", "identity_hash"),
        CheckConstraint(f"status IN ({_values(LeadStatus)})", name="status_valid"),
        CheckConstraint(f"consent IN ({_values(Consent)})", name="consent_valid"),
        CheckConstraint(
            "email IS NOT NULL OR phone IS NOT NULL OR linkedin_url IS NOT NULL",
            name="has_identity",
        ),
        Index("ix_cam_leads_due", "campaign_id", "next_action_at_utc", **_partial(DUE_LEADS_WHERE)),
        # Capture merges a lead found by any of its identifiers.
        Index("ix_cam_leads_email", "campaign_id", "email"),
        Index("ix_cam_leads_phone", "campaign_id", "phone"),
        Index("ix_cam_leads_linkedin", "campaign_id", "linkedin_url"),
        Index("ix_cam_leads_created", "campaign_id", "created_at_utc"),
    )

    @property
    def display_name(self) -> str:
        full = " ".join(part for part in (self.first_name, self.last_name) if part)
        return full or self.email or self.linkedin_url or self.phone or f"lead {self.id}"

    def __repr__(self) -> str:
        return f"<Lead {self.id} campaign={self.campaign_id} {self.status} step={self.step}>"


class OutreachMessage(Base):
    __tablename__ = "cam_outreach_messages"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cam_campaigns.id", ondelete="CASCADE")
    )
    lead_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cam_leads.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(998))
    body: Mapped[str] = mapped_column(Text)
    generated_by: Mapped[str] = mapped_column(String(16))  # "llm" or "template"
    publish_status: Mapped[str] = mapped_column(String(16), default=PublishStatus.DRAFT)
    reviewer: Mapped[str | None] = mapped_column(String(128))
    review_note: Mapped[str | None] = mapped_column(Text)
    approved_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rejected_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The CAMPAIGN_PUBLISH action (key cam_publish:{id}) that owns the message once QUEUED.
    publish_action_id: Mapped[int | None] = mapped_column(BigInteger)
    queued_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    external_id: Mapped[str | None] = mapped_column(String(500))
    # The provider's own id of the sent message when it differs from the Message-ID
    # (external_id): provider events are linked to the message by either.
    provider_message_id: Mapped[str | None] = mapped_column(String(500))
    published_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set (committed) by a publish that was admitted under the daily limit and is sending;
    # it counts against the limit until the send is recorded or given up.
    sending_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # One message per lead and step: a second tick can never draft it again.
        UniqueConstraint("lead_id", "step"),
        CheckConstraint(f"publish_status IN ({_values(PublishStatus)})", name="status_valid"),
        Index("ix_cam_outreach_messages_status", "campaign_id", "publish_status"),
        # The daily limit counts what was published in a local day.
        Index("ix_cam_outreach_messages_published", "campaign_id", "published_at_utc"),
        Index("ix_cam_outreach_messages_created", "campaign_id", "created_at_utc"),
        # Provider events find their message by Message-ID or provider id.
        Index("ix_cam_outreach_messages_external", "external_id"),
        Index("ix_cam_outreach_messages_provider_id", "provider_message_id"),
    )

    def __repr__(self) -> str:
        return (
            f"<OutreachMessage {self.id} lead={self.lead_id} step={self.step} "
            f"{self.channel} {self.publish_status}>"
        )


class OrchestratorRun(Base):
    """One tick of one campaign. The RUNNING row is the campaign's lease (at most one)."""

    __tablename__ = "cam_orchestrator_runs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cam_campaigns.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    holder: Mapped[str] = mapped_column(String(128))
    action_id: Mapped[int | None] = mapped_column(BigInteger)
    slot_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_expires_at_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How often an expired lease of this run was taken over (its holder crashed).
    takeovers: Mapped[int] = mapped_column(Integer, default=0)
    leads_considered: Mapped[int] = mapped_column(Integer, default=0)
    messages_drafted: Mapped[int] = mapped_column(Integer, default=0)
    messages_queued: Mapped[int] = mapped_column(Integer, default=0)
    leads_lost: Mapped[int] = mapped_column(Integer, default=0)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    details_json: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        CheckConstraint(f"status IN ({_values(RunStatus)})", name="status_valid"),
        # One live lease per campaign: taking it is one INSERT .. ON CONFLICT on this index.
        Index(
            "uq_cam_orchestrator_runs_live",
            "campaign_id",
            unique=True,
            **_partial(LIVE_RUN_WHERE),
        ),
        Index("ix_cam_orchestrator_runs_campaign", "campaign_id", "started_at_utc"),
    )


class CampaignMetrics(Base):
    __tablename__ = "cam_campaign_metrics"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cam_campaigns.id", ondelete="CASCADE")
    )
    metric_date: Mapped[date] = mapped_column(Date)  # the campaign's local date
    leads_captured: Mapped[int] = mapped_column(Integer, default=0)
    messages_drafted: Mapped[int] = mapped_column(Integer, default=0)
    messages_approved: Mapped[int] = mapped_column(Integer, default=0)
    messages_rejected: Mapped[int] = mapped_column(Integer, default=0)
    messages_published: Mapped[int] = mapped_column(Integer, default=0)
    messages_failed: Mapped[int] = mapped_column(Integer, default=0)
    # Outcomes of the day's email, from provider events and unsubscribes (distinct messages).
    delivered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bounced_hard: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bounced_soft: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    complained: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unsubscribed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    opened: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    clicked: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    by_channel: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    external: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    action_id: Mapped[int | None] = mapped_column(BigInteger)
    collected_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("campaign_id", "metric_date"),)


class Suppression(Base):
    """An address or a whole domain no campaign may contact."""

    __tablename__ = "cam_suppressions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))  # normalised: lower-case
    reason: Mapped[str | None] = mapped_column(Text)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("kind", "value"),
        CheckConstraint(f"kind IN ({_values(SuppressionKind)})", name="kind_valid"),
    )


class Recipient(Base):
    """One person as a channel reaches them (``email:ada@example.com``), across campaigns.

    Its row is the lock every admission of a message to that person takes, so two campaigns
    deciding at once about the same person take turns (see aicmo.cam.admission)."""

    __tablename__ = "cam_recipients"

    address: Mapped[str] = mapped_column(String(520), primary_key=True)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Contact(Base):
    """A message admitted to a person: what the frequency caps count. It counts while its
    message is PUBLISHED or being sent (a reservation); a released send stops counting."""

    __tablename__ = "cam_contacts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(520))
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cam_outreach_messages.id", ondelete="CASCADE"), unique=True
    )
    campaign_id: Mapped[int] = mapped_column(BigInteger)
    at_utc: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_cam_contacts_address", "address", "at_utc"),)
