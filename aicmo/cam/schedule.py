"""What beat calls: enqueue the ticks and the daily metrics that are due, from the database.

Beat holds a few static entries (``beat_schedule.py``) whose tasks call these functions; it
never holds one entry per campaign. Each run is one query for the campaigns and one bulk,
keyed enqueue, so two beat processes (or a restarted one, or a late run) enqueue a slot once:
``cam_tick:{campaign_id}:{slot_utc_iso}`` and ``cam_metrics:{campaign_id}:{local_date}``.

Cadence slots
    Every N minutes: multiples of N minutes of elapsed time since the Unix epoch (on the hour
    for N = 60, at 00:00 UTC for N = 1440). Elapsed time knows no DST: a 25-hour local day has
    25 hourly slots. Daily at HH:MM: that wall-clock time in the campaign's timezone, once per
    local date. On a spring-forward day a time in the gap is read with the offset before the
    change, so 02:30 becomes 03:30 (it runs once, an hour later on the wall clock); on a
    fall-back day a repeated time runs at its first occurrence only.

On time, late, missed
    Each run of ``cam.schedule_ticks`` records its "now" (the high-water mark, a row of
    ``aol_control``) in the transaction that enqueues its ticks, so every slot up to the mark
    has been enqueued. The next run enqueues every slot after the mark, so a run that comes
    late, is lost, or lands on the other side of a slot boundary skips nothing, and runs of two
    beats share the work. When the mark is older than ``AICMO_BEAT_CATCH_UP_TOLERANCE_SECONDS``
    (default 300 s, at least twice the fan-out interval) beat was down and the slots in between
    were missed: ``AICMO_BEAT_CATCH_UP=latest`` (default) enqueues only the latest slot, once,
    so a campaign that missed ten slots ticks once, not ten times; ``none`` enqueues it only
    if it is within the tolerance (on time), else nothing, and the campaign resumes at its next
    slot. With ``latest``, a campaign that has just become ACTIVE (its ``updated_at_utc`` is
    recent) also ticks its latest slot at once. A run when nothing is due enqueues nothing.

Daily metrics
    Each run makes sure every campaign that is live (ACTIVE or PAUSED, or STOPPED within the
    lookback) has a CAMPAIGN_FETCH_METRICS action for its local today, with ``not_before`` at
    the local end of the day (it waits PENDING in the database; the sweeper releases it at
    that moment, whether or not beat is up), and for the ``AICMO_BEAT_METRICS_LOOKBACK_DAYS``
    past days (never before the campaign existed): a day missed while beat was down is still
    fetched, once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import and_, bindparam, case, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aicmo.cam import keys
from aicmo.cam.clock import day_bounds, local_date, wall_time
from aicmo.cam.models import Campaign, CampaignStatus
from aicmo.config import Settings, get_settings
from aicmo.db import UTCDateTime, utcnow
from aicmo.orchestration.models import AOLControl
from aicmo.orchestration.queue import ActionQueue, Enqueued

log = logging.getLogger(__name__)

CatchUp = Literal["latest", "none"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HasCadence(Protocol):
    @property
    def timezone(self) -> str: ...

    @property
    def tick_every_minutes(self) -> int | None: ...

    @property
    def tick_daily_at(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Cadence:
    """A campaign's tick cadence: every N minutes, or daily at a local HH:MM."""

    timezone: str
    tick_every_minutes: int | None = None
    tick_daily_at: str | None = None

    @classmethod
    def of(cls, campaign: HasCadence) -> Cadence:
        if isinstance(campaign, Cadence):
            return campaign
        return cls(campaign.timezone, campaign.tick_every_minutes, campaign.tick_daily_at)


def _daily_slot(day: date, at: str, timezone: str) -> datetime:
    """The daily slot of local date ``day`` in UTC. ``fold=0``: a wall time in a DST gap is
    read with the offset before the change (02:30 -> 03:30); a repeated one is its first
    occurrence. Either way the slot falls on ``day`` itself."""
    return wall_time(day, at, timezone)


def latest_slot(campaign: HasCadence, now: datetime) -> datetime:
    """The most recent cadence slot at or before ``now``, in UTC."""
    cadence = Cadence.of(campaign)
    now = keys.utc_slot(now)
    if cadence.tick_every_minutes:
        step = timedelta(minutes=cadence.tick_every_minutes)
        return _EPOCH + ((now - _EPOCH) // step) * step
    assert cadence.tick_daily_at is not None
    today = local_date(now, cadence.timezone)
    for day in (today, today - timedelta(days=1)):
        slot = _daily_slot(day, cadence.tick_daily_at, cadence.timezone)
        if slot <= now:
            return slot
    raise AssertionError("unreachable: yesterday's slot is always in the past")


def slots_between(campaign: HasCadence, after: datetime, until: datetime) -> list[datetime]:
    """Every cadence slot ``s`` with ``after < s <= until``, ascending, in UTC."""
    cadence = Cadence.of(campaign)
    after, until = keys.utc_slot(after), keys.utc_slot(until)
    found: list[datetime] = []
    if until <= after:
        return found
    if cadence.tick_every_minutes:
        step = timedelta(minutes=cadence.tick_every_minutes)
        slot = _EPOCH + ((after - _EPOCH) // step + 1) * step
        while slot <= until:
            found.append(slot)
            slot += step
        return found
    assert cadence.tick_daily_at is not None
    # The slot of local date d falls on d, so only the dates from after's to until's matter.
    day = local_date(after, cadence.timezone)
    last = local_date(until, cadence.timezone)
    while day <= last:
        slot = _daily_slot(day, cadence.tick_daily_at, cadence.timezone)
        if after < slot <= until:
            found.append(slot)
        day += timedelta(days=1)
    return found


def due_slots(
    campaign: HasCadence,
    now: datetime,
    catch_up: CatchUp,
    tolerance: timedelta,
    since: datetime | None = None,
    *,
    changed: bool = True,
) -> list[datetime]:
    """The slots one fan-out run at ``now`` enqueues, given ``since``, the "now" of the last
    committed run (None: unknown).

    - ``since`` within ``tolerance`` before ``now`` (beat is up): every slot in
      ``(since, now]``, so no slot is skipped however late or irregular the runs; with
      ``"latest"``, when there is none and the campaign may have ``changed`` since (just
      become ACTIVE, say), the latest slot: it ticks at once (a no-op if it already did).
    - ``since`` older than that, or unknown (beat was down, or this is the first run): the
      slots in between were missed. ``"latest"``: the latest slot only, one tick however many
      were missed; ``"none"``: the latest slot only if it is within ``tolerance`` (on time).
    - ``since`` after ``now``: a run with a later "now" committed first (two beats); every
      slot up to it is done, so nothing is new. More than ``tolerance`` after ``now``, though,
      it can only come from a host whose clock runs ahead: it is treated as unknown.
    """
    if catch_up not in ("latest", "none"):
        raise ValueError(f"catch_up must be 'latest' or 'none', not {catch_up!r}")
    now = keys.utc_slot(now)
    latest = latest_slot(campaign, now)
    if since is not None and since - now > tolerance:
        since = None
    if since is None or now - since > tolerance:
        return [latest] if catch_up == "latest" or now - latest <= tolerance else []
    found = slots_between(campaign, since, now)
    if not found and catch_up == "latest" and changed:
        return [latest]
    return found


@dataclass(frozen=True, slots=True)
class ScheduleClock:
    """The fan-out's "now": the real time, unless a test accelerates it with
    ``AICMO_BEAT_TEST_CLOCK_*`` (virtual = virtual_start + (real - real_start) * speed)."""

    real_start: datetime | None = None
    virtual_start: datetime | None = None
    speed: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ScheduleClock:
        s = settings or get_settings()
        if s.beat_test_clock_real_start is None or s.beat_test_clock_virtual_start is None:
            return cls()
        return cls(
            s.beat_test_clock_real_start.astimezone(UTC),
            s.beat_test_clock_virtual_start.astimezone(UTC),
            s.beat_test_clock_speed,
        )

    @property
    def accelerated(self) -> bool:
        return self.real_start is not None

    def now(self) -> datetime:
        real = utcnow()
        if self.real_start is None or self.virtual_start is None:
            return real
        return self.virtual_start + (real - self.real_start) * self.speed

    def to_real(self, when: datetime) -> datetime:
        """The real instant at which the clock shows ``when`` (a ``not_before``)."""
        if self.real_start is None or self.virtual_start is None:
            return when
        return self.real_start + (when - self.virtual_start) / self.speed


def tick_payload(campaign_id: int, slot: datetime) -> dict[str, object]:
    return {"campaign_id": campaign_id, "slot": keys.utc_slot(slot).isoformat()}


def _tick_item(campaign_id: int, slot: datetime) -> tuple[str, dict[str, object], str]:
    return keys.TICK, tick_payload(campaign_id, slot), keys.tick_key(campaign_id, slot)


def enqueue_ticks(session: Session, campaign_ids: Sequence[int], slot: datetime) -> list[Enqueued]:
    """CAMPAIGN_TICK for each campaign at ``slot``, key ``cam_tick:{id}:{slot_utc_iso}``,
    in one round trip in the caller's transaction. Enqueueing a slot again is a no-op."""
    return ActionQueue.enqueue_many(
        session, [_tick_item(campaign_id, slot) for campaign_id in dict.fromkeys(campaign_ids)]
    )


# The "now" of the last committed cam.schedule_ticks run (the high-water mark), kept in
# aol_control (never enabled, so never a pause flag) and moved in the enqueue's transaction:
# every slot up to it has been enqueued, or deliberately skipped.
HIGH_WATER = "beat:cam.schedule_ticks"


def read_high_water(session: Session) -> datetime | None:
    return session.scalar(select(AOLControl.updated_at_utc).where(AOLControl.name == HIGH_WATER))


def _advance_high_water(session: Session, now: datetime, tolerance: timedelta) -> None:
    """Move the mark to ``now`` unless it is later already; a mark more than ``tolerance``
    ahead of ``now`` (written by a host whose clock ran ahead) is set back to ``now``."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = module.insert(AOLControl).values(
        name=HIGH_WATER,
        enabled=False,
        reason="the clock time of the last cam.schedule_ticks run",
        updated_by=f"{socket.gethostname()}/{os.getpid()}",
        updated_at_utc=now,
    )
    newer = or_(
        insert.excluded.updated_at_utc > AOLControl.updated_at_utc,
        AOLControl.updated_at_utc > bindparam("ahead", now + tolerance, type_=UTCDateTime()),
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "updated_at_utc": case(
                    (newer, insert.excluded.updated_at_utc), else_=AOLControl.updated_at_utc
                ),
                "updated_by": case(
                    (newer, insert.excluded.updated_by), else_=AOLControl.updated_by
                ),
            },
        )
    )


def schedule_ticks(
    session: Session,
    now: datetime | None = None,
    *,
    catch_up: CatchUp | None = None,
    tolerance: timedelta | None = None,
) -> list[Enqueued]:
    """What ``cam.schedule_ticks`` runs every minute: for every ACTIVE campaign whose kill
    switch is off, enqueue its due slots (see :func:`due_slots`, ``since`` being the last
    run's "now") in the caller's transaction, and move the high-water mark to ``now``. One
    query for the campaigns, one bulk enqueue. Returns every due slot's action, new or not."""
    settings = get_settings()
    now = keys.utc_slot(now) if now is not None else utcnow()
    mode: CatchUp = catch_up or settings.beat_catch_up
    window = (
        tolerance
        if tolerance is not None
        else timedelta(seconds=settings.beat_catch_up_tolerance_seconds)
    )
    since = read_high_water(session)
    if since is not None and since - now > window:
        log.warning(
            "the cam.schedule_ticks mark %s is ahead of this run's clock (%s): a host's clock "
            "runs ahead? It is reset.",
            since.isoformat(),
            now.isoformat(),
        )
    elif since is not None and now - since > window:
        log.warning(
            "no cam.schedule_ticks run for %s (beat or workers down?): the slots missed "
            "meanwhile are %s",
            now - since,
            "collapsed into each campaign's latest" if mode == "latest" else "skipped",
            extra={"since": since.isoformat(), "catch_up": mode},
        )
    rows = session.execute(
        select(
            Campaign.id,
            Campaign.timezone,
            Campaign.tick_every_minutes,
            Campaign.tick_daily_at,
            Campaign.updated_at_utc,
        )
        .where(Campaign.status == CampaignStatus.ACTIVE, Campaign.kill_switch.is_(False))
        .order_by(Campaign.id)
    ).all()
    # A campaign changed (activated, kill switch lifted, cadence edited) shortly before the
    # last run may have committed after that run read the campaigns: the window covers it.
    changed_after = since - window if since is not None else None
    # Ordered by (campaign, slot): two concurrent runs take the key locks in the same order.
    items = [
        _tick_item(row.id, slot)
        for row in rows
        for slot in due_slots(
            Cadence(row.timezone, row.tick_every_minutes, row.tick_daily_at),
            now,
            mode,
            window,
            since,
            changed=changed_after is None or row.updated_at_utc >= changed_after,
        )
    ]
    enqueued = ActionQueue.enqueue_many(session, items)
    _advance_high_water(session, now, window)
    return enqueued


_LIVE = (CampaignStatus.ACTIVE, CampaignStatus.PAUSED)


def schedule_daily_metrics(
    session: Session,
    now: datetime | None = None,
    *,
    lookback_days: int | None = None,
    clock: ScheduleClock | None = None,
) -> list[Enqueued]:
    """What ``cam.schedule_daily_metrics`` runs: CAMPAIGN_FETCH_METRICS, key
    ``cam_metrics:{id}:{local date}``, for each live campaign's local today (``not_before``
    at the local end of the day: it waits PENDING) and its past ``lookback_days`` days that
    the campaign lived through (due now; a no-op when they exist). One query, one enqueue."""
    settings = get_settings()
    clock = clock or ScheduleClock()
    now = keys.utc_slot(now) if now is not None else clock.now()
    lookback = lookback_days if lookback_days is not None else settings.beat_metrics_lookback_days
    rows = session.execute(
        select(
            Campaign.id,
            Campaign.timezone,
            Campaign.status,
            Campaign.created_at_utc,
            Campaign.updated_at_utc,
        )
        .where(
            or_(
                Campaign.status.in_(_LIVE),
                # A stopped campaign still gets the days up to the one it stopped on.
                and_(
                    Campaign.status == CampaignStatus.STOPPED,
                    Campaign.updated_at_utc >= now - timedelta(days=lookback + 1),
                ),
            )
        )
        .order_by(Campaign.id)
    ).all()
    items: list[dict[str, Any]] = []
    for row in rows:
        today = local_date(now, row.timezone)
        day = max(today - timedelta(days=lookback), local_date(row.created_at_utc, row.timezone))
        last = today
        if row.status == CampaignStatus.STOPPED:
            last = min(today, local_date(row.updated_at_utc, row.timezone))
        while day <= last:
            _, end = day_bounds(day, row.timezone)
            items.append(
                {
                    "action_type": keys.FETCH_METRICS,
                    "payload": {"campaign_id": row.id, "date": day.isoformat()},
                    "idempotency_key": keys.metrics_key(row.id, day),
                    "not_before": clock.to_real(end),
                }
            )
            day += timedelta(days=1)
    return ActionQueue.enqueue_many(session, items)
