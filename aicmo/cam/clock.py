"""Local days of a campaign: its IANA timezone decides where "today" starts and ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {name!r} (e.g. 'Europe/Paris', 'UTC')") from None


def local_date(now: datetime, timezone: str) -> date:
    return now.astimezone(zone(timezone)).date()


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of a local date, in UTC. A DST day is 23 or 25 hours long."""
    tz = zone(timezone)
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def today_bounds(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    return day_bounds(local_date(now, timezone), timezone)


def wall_time(day: date, at: str, timezone: str) -> datetime:
    """Local wall time ``at`` (HH:MM) of date ``day``, in UTC. ``fold=0``: a time in a DST
    gap is read with the offset before the change (02:30 -> 03:30), a repeated one is its
    first occurrence; either way it falls on ``day`` itself (the beat's daily slots too)."""
    hour, minute = (int(part) for part in at.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=zone(timezone)).astimezone(UTC)
