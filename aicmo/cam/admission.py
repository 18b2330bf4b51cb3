"""Recipient-aware admission of a publish: send windows and per-person frequency caps.

Both are decided in :func:`aicmo.cam.publishing.open_publish`, in the short transaction that
also admits under the daily limit and reserves the send.

Send windows
    A campaign may declare local hours and weekdays (``{"start": "09:00", "end": "17:30",
    "days": ["mon", .., "fri"]}``) when its messages may arrive, read in the lead's timezone
    (the lead attribute ``timezone``, an IANA name; else the campaign's). A publish that comes
    due outside the window raises :class:`SendWindowClosed`, a :class:`Deferred`: the action
    goes back to RETRY with ``not_before`` at the next opening and its attempt given back.
    Wall times are read as the beat's daily slots are (:func:`aicmo.cam.clock.wall_time`): on a
    spring-forward day an opening in the gap (02:30) is read with the offset before the
    change (03:30); on a fall-back day a repeated time is its first occurrence.

Frequency caps
    At most N messages to one person per rolling period, across every campaign: the global
    caps (``AICMO_CAM_FREQUENCY_CAPS``, default ``1/24h,3/7d``) always apply, and a campaign's
    own caps are added to them, so an override can only be stricter. A person is the
    normalised address the message's channel reaches: the email address for email, the
    LinkedIn URL for LinkedIn, the phone number for phone channels (``email:ada@x.com``).
    Each admission takes that person's row lock in ``cam_recipients`` (created on first use)
    and counts the person's ``cam_contacts`` in the periods, then writes its own contact in
    the same transaction: two workers admitting messages to one person, from any campaigns,
    take turns on that lock and the second counts the first. A contact counts while its
    message is PUBLISHED or being sent (``sending_at_utc`` set); a send that failed and was
    released stops counting. Times are the database's clock. A capped publish is deferred
    (:class:`FrequencyCapped`) until the oldest contact in the full period leaves it, or
    FAILED with "frequency cap" (:class:`FrequencyCapExceeded`) when that moment is past
    the message's validity (its approval + ``AICMO_CAM_MESSAGE_VALIDITY_HOURS``).

Lock order: the campaign row, the message row, then the recipient row (one per message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import and_, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam.clock import local_date, wall_time, zone
from aicmo.cam.models import Campaign, Contact, Lead, OutreachMessage, PublishStatus, Recipient
from aicmo.config import get_settings
from aicmo.orchestration.errors import Deferred, PermanentError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HH_MM = r"^([01]\d|2[0-3]):[0-5]\d$"


# -- the specs a campaign gives ------------------------------------------------------------


class SendWindowSpec(BaseModel):
    """When a campaign's messages may arrive, in the recipient's local time."""

    model_config = ConfigDict(extra="forbid")

    start: Annotated[str, StringConstraints(pattern=_HH_MM)]
    end: Annotated[str, StringConstraints(pattern=_HH_MM)]
    days: list[Annotated[str, StringConstraints(to_lower=True)]] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), min_length=1, max_length=7
    )

    @model_validator(mode="after")
    def _coherent(self) -> SendWindowSpec:
        if self.end <= self.start:
            raise ValueError(
                f"send window end {self.end} must be after its start {self.start} (same day)"
            )
        unknown = [day for day in self.days if day not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday(s) {unknown}: use {', '.join(WEEKDAYS)}")
        self.days = [day for day in WEEKDAYS if day in self.days]
        return self


class CapSpec(BaseModel):
    """At most ``max`` messages to one person per ``hours``."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(ge=1, le=10_000)
    hours: float = Field(gt=0, le=366 * 24)


@dataclass(frozen=True, slots=True)
class Cap:
    max: int
    period: timedelta

    def __str__(self) -> str:
        hours = self.period.total_seconds() / 3600
        return f"{self.max} per {hours:g}h"


_CAP = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([hd])\s*$")


def parse_caps(value: str) -> list[Cap]:
    """``"1/24h,3/7d"`` -> caps. Raises ValueError naming the part that is wrong."""
    caps: list[Cap] = []
    for part in value.split(","):
        if not part.strip():
            continue
        match = _CAP.match(part)
        if match is None or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
            raise ValueError(f"frequency cap {part.strip()!r} is not N/period, e.g. 1/24h or 3/7d")
        hours = float(match.group(2)) * (24 if match.group(3) == "d" else 1)
        caps.append(Cap(int(match.group(1)), timedelta(hours=hours)))
    return caps


def campaign_caps(campaign: Campaign) -> list[Cap]:
    """The global caps plus the campaign's own: every one applies, so only stricter."""
    caps = parse_caps(get_settings().cam_frequency_caps)
    for raw in campaign.frequency_caps or []:
        spec = CapSpec.model_validate(raw)
        caps.append(Cap(spec.max, timedelta(hours=spec.hours)))
    return caps


# -- send windows --------------------------------------------------------------------------


class SendWindowClosed(Deferred):
    """The recipient's local time is outside the campaign's send window."""

    def __init__(self, opening: datetime, timezone: str, now: datetime) -> None:
        local = opening.astimezone(zone(timezone))
        super().__init__(
            f"waiting for send window until {local.isoformat()} ({timezone}; "
            f"{opening.isoformat()} UTC)",
            retry_after=max(1.0, (opening - now).total_seconds()),
        )
        self.opening = opening


def lead_timezone(lead: Lead, campaign: Campaign) -> str:
    """The lead's own IANA timezone (attribute ``timezone``) when valid, else the campaign's."""
    value = (lead.attributes or {}).get("timezone")
    if isinstance(value, str) and value.strip():
        try:
            zone(value.strip())
            return value.strip()
        except ValueError:
            pass  # a lead source's typo must not stop the message: the campaign's zone
    return campaign.timezone


def next_opening(window: dict[str, Any], timezone: str, now: datetime) -> datetime | None:
    """None when ``now`` is inside the window, else the next opening (UTC)."""
    spec = SendWindowSpec.model_validate(window)
    today = local_date(now, timezone)
    for offset in range(9):
        day = today + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in spec.days:
            continue
        opens, closes = wall_time(day, spec.start, timezone), wall_time(day, spec.end, timezone)
        if opens <= now < closes:
            return None
        if opens > now:
            return opens
    raise AssertionError("unreachable: a window with a weekday opens within 8 days")


def check_send_window(campaign: Campaign, lead: Lead, now: datetime) -> None:
    if not campaign.send_window:
        return
    timezone = lead_timezone(lead, campaign)
    opening = next_opening(campaign.send_window, timezone, now)
    if opening is not None:
        raise SendWindowClosed(opening, timezone, now)


# -- frequency caps ------------------------------------------------------------------------


class FrequencyCapped(Deferred):
    """The person had their share of messages; this one waits until a cap allows it."""

    def __init__(self, address: str, cap: Cap, allowed_at: datetime, now: datetime) -> None:
        super().__init__(
            f"waiting for frequency cap ({cap} for {address}) until {allowed_at.isoformat()}",
            retry_after=max(1.0, (allowed_at - now).total_seconds()),
        )
        self.allowed_at = allowed_at


class FrequencyCapExceeded(PermanentError):
    """The caps would hold the message past its validity: it is never sent."""


def recipient_address(channel: str, lead: Lead) -> str | None:
    """The normalised address a channel reaches the person at (leads are normalised at
    capture: lower-case email, canonical LinkedIn URL, E.164 phone)."""
    if channel == "email":
        return f"email:{lead.email}" if lead.email else None
    if "linkedin" in channel and lead.linkedin_url:
        return f"linkedin:{lead.linkedin_url}"
    if channel in ("sms", "phone", "whatsapp", "voice") and lead.phone:
        return f"phone:{lead.phone}"
    # Other social channels address a handle, not a person we can match across campaigns.
    if lead.email:
        return f"email:{lead.email}"
    return None


def _statement_now(session: Session, fallback: datetime) -> datetime:
    """The database's clock at this statement (after any lock wait), SQLite: this host's."""
    if session.get_bind().dialect.name != "postgresql":
        return fallback
    value: datetime = session.execute(text("SELECT statement_timestamp()")).scalar_one()
    return value.astimezone(UTC)


def _lock_recipient(session: Session, address: str, now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(Recipient)
        .values(address=address, created_at_utc=now)
        .on_conflict_do_nothing(index_elements=["address"])
    )
    session.execute(select(Recipient.address).where(Recipient.address == address).with_for_update())


def admit_recipient(
    session: Session, campaign: Campaign, message: OutreachMessage, lead: Lead, now: datetime
) -> datetime:
    """Take the person's lock, check every cap, record this message's contact. Returns the
    database time of the admission. Raises :class:`FrequencyCapped` (wait) or
    :class:`FrequencyCapExceeded` (never within the message's validity)."""
    address = recipient_address(message.channel, lead)
    if address is None:
        return now
    caps = campaign_caps(campaign)
    _lock_recipient(session, address, now)
    now = _statement_now(session, now)  # read after the lock: the other admission is visible
    longest = max((cap.period for cap in caps), default=timedelta(0))
    counting = or_(
        OutreachMessage.publish_status == PublishStatus.PUBLISHED,
        and_(
            OutreachMessage.publish_status == PublishStatus.QUEUED,
            OutreachMessage.sending_at_utc.is_not(None),
        ),
    )
    times = list(
        session.scalars(
            select(Contact.at_utc)
            .join(OutreachMessage, OutreachMessage.id == Contact.message_id)
            .where(
                Contact.address == address,
                Contact.message_id != message.id,
                Contact.at_utc > now - longest,
                counting,
            )
            .order_by(Contact.at_utc)
        )
    )
    allowed_at, binding = now, None
    for cap in caps:
        recent = [at for at in times if at > now - cap.period]
        if len(recent) >= cap.max:
            # Room comes back when enough of the oldest leave the rolling period.
            free_at = recent[len(recent) - cap.max] + cap.period
            if free_at > allowed_at:
                allowed_at, binding = free_at, cap
    if binding is not None:
        valid_until = (message.approved_at_utc or message.created_at_utc) + timedelta(
            hours=get_settings().cam_message_validity_hours
        )
        if allowed_at > valid_until:
            raise FrequencyCapExceeded(
                f"frequency cap {binding} for {address}: message {message.id} could not be "
                f"sent before it expires at {valid_until.isoformat()}"
            )
        raise FrequencyCapped(address, binding, allowed_at, now)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Contact).values(
        address=address, message_id=message.id, campaign_id=campaign.id, at_utc=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["message_id"], set_={"address": address, "at_utc": now}
        )
    )
    return now
