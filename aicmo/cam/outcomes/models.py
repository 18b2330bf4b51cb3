"""Tables of the outcome loop: one row per email event, and the sending-domain brakes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from aicmo.db import Base, JSONType, UTCDateTime, utcnow
from aicmo.orchestration.models import BigIntId


class EventKind(StrEnum):
    DELIVERED = "delivered"
    BOUNCE_HARD = "bounce_hard"
    BOUNCE_SOFT = "bounce_soft"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    OPEN = "open"
    CLICK = "click"
    OTHER = "other"  # sent, deferred, dropped...: kept on record, counted nowhere


def _values(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


class EmailEvent(Base):
    """What happened to a sent email, once per provider event (the provider's id is unique)."""

    __tablename__ = "cam_email_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("cam_outreach_messages.id", ondelete="SET NULL")
    )
    campaign_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("cam_campaigns.id", ondelete="CASCADE")
    )
    recipient: Mapped[str | None] = mapped_column(String(320))
    url: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    occurred_at_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        CheckConstraint(f"kind IN ({_values(EventKind)})", name="kind_valid"),
        Index("ix_cam_email_events_campaign", "campaign_id", "kind", "created_at_utc"),
        Index("ix_cam_email_events_message", "message_id", "kind"),
        Index("ix_cam_email_events_recipient", "recipient", "kind", "created_at_utc"),
    )


class SendingBrake(Base):
    """A sending domain whose complaint or bounce rate tripped the global brake. While
    ``released_at_utc`` is NULL every campaign sending from the domain stays paused."""

    __tablename__ = "cam_sending_brakes"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    braked_at_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_by: Mapped[str | None] = mapped_column(String(128))
