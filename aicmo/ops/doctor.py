"""The census of what nothing will move on its own (``aicmo doctor``).

Every state a row can be in has a process that moves it on: the sweeper (due PENDING rows,
lost messages, expired leases), beat, a reconciliation, or an operator. Each :class:`Check`
here looks for rows whose process did not come, more than a few sweep intervals late (a
sweep in progress is not a finding), and says why; some can be repaired safely. The list is
open: other modules add their checks with :func:`register_check`.

Every time compared is the database's clock (``now()``), as everywhere in the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from aicmo.config import Settings, get_settings
from aicmo.db import db_now
from aicmo.orchestration.models import AOLAction, AOLControl
from aicmo.orchestration.registry import registry
from aicmo.orchestration.status import CLAIMABLE_STATUSES, WAITING_STATUSES, ActionStatus

# Findings listed per check at most: a census of a disaster is still readable.
MAX_FINDINGS = 1000


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str  # what is stranded, e.g. "action 42"
    detail: str  # why nothing will move it, and what to do
    repairable: bool
    ref: Any = None  # the row's key (e.g. an action id) for the check's repair

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "subject": self.subject,
            "detail": self.detail,
            "repairable": self.repairable,
        }


Finder = Callable[[Session], list[Finding]]
# Repairs what it can of these findings, commits, and says what it did.
Repairer = Callable[[Session, list[Finding]], list[str]]


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    find: Finder
    repair: Repairer | None = None


@dataclass
class DoctorReport:
    at: datetime
    findings: list[Finding] = field(default_factory=list)  # what remains stranded
    repaired: list[str] = field(default_factory=list)  # what --repair did
    found_before_repair: int = 0

    @property
    def stranded(self) -> int:
        return len(self.findings)

    def by_check(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.check] = counts.get(finding.check, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "stranded": self.stranded,
            "by_check": self.by_check(),
            "findings": [f.as_dict() for f in self.findings],
            "repaired": self.repaired,
            "found_before_repair": self.found_before_repair,
            "checks": [c.name for c in CHECKS],
        }


# -- what the checks share -----------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    now: datetime
    slack: timedelta  # "a few sweep intervals": later than this, the sweeper did not come
    known: list[str]
    paused_all: bool
    paused: list[str]
    settings: Settings


def _scene(session: Session) -> _Scene:
    settings = get_settings()
    names = list(session.scalars(select(AOLControl.name).where(AOLControl.enabled)))
    return _Scene(
        now=db_now(session),
        slack=timedelta(seconds=settings.sweep_interval_seconds * settings.doctor_grace_sweeps),
        known=registry.names(),
        paused_all="pause" in names,
        paused=[n.split(":", 1)[1] for n in names if n.startswith("pause:")],
        settings=settings,
    )


def _movable(scene: _Scene) -> list[Any]:
    """Rows the sweeper should move: a known type, not held by an operator's pause."""
    where = [AOLAction.action_type.in_(scene.known)]
    if scene.paused:
        where.append(AOLAction.action_type.not_in(scene.paused))
    return where


def _action_rows(session: Session, *where: Any) -> list[Any]:
    return list(
        session.execute(
            select(
                AOLAction.id,
                AOLAction.action_type,
                AOLAction.status,
                AOLAction.not_before_utc,
                AOLAction.queued_at_utc,
                AOLAction.lease_expires_at_utc,
                AOLAction.claimed_by,
            )
            .where(*where)
            .order_by(AOLAction.id)
            .limit(MAX_FINDINGS)
        )
    )


def _late(now: datetime, when: datetime | None) -> str:
    if when is None:
        return "never"
    return f"{(now - when).total_seconds():.0f}s ago"


def _sweeper() -> Any:
    from aicmo.orchestration.sweeper import Sweeper

    return Sweeper()


# -- the checks ----------------------------------------------------------------------------


def find_unknown_types(session: Session) -> list[Finding]:
    scene = _scene(session)
    return [
        Finding(
            "unknown_type",
            f"action {row.id}",
            f"{row.status} {row.action_type}: type not registered in this process (removed "
            "or renamed by a deploy, or another AICMO_ACTION_MODULES); set aside until it "
            f"is deployed back, or `aicmo actions cancel {row.id}`",
            repairable=False,
            ref=row.id,
        )
        for row in _action_rows(
            session,
            AOLAction.status.in_(WAITING_STATUSES),
            AOLAction.action_type.not_in(scene.known),
        )
    ]


def find_lost_messages(session: Session) -> list[Finding]:
    """READY/RETRY with no message and none coming: unsent though due, or sent so long ago
    that even the backlog resend bound has passed."""
    scene = _scene(session)
    if scene.paused_all:
        return []
    bound = timedelta(
        seconds=scene.settings.resend_grace_seconds * scene.settings.resend_backlog_factor
    )
    rows = _action_rows(
        session,
        AOLAction.status.in_(CLAIMABLE_STATUSES),
        *_movable(scene),
        or_(
            and_(
                AOLAction.queued_at_utc.is_(None),
                AOLAction.not_before_utc < scene.now - scene.slack,
            ),
            AOLAction.queued_at_utc < scene.now - bound - scene.slack,
        ),
    )
    return [
        Finding(
            "lost_message",
            f"action {row.id}",
            f"{row.status} {row.action_type}: due {_late(scene.now, row.not_before_utc)}, "
            f"message {'never sent' if row.queued_at_utc is None else 'sent '}"
            f"{'' if row.queued_at_utc is None else _late(scene.now, row.queued_at_utc)}, "
            "and no sweep sent it (is beat running, with a worker on its queue?)",
            repairable=True,
            ref=row.id,
        )
        for row in rows
    ]


def repair_lost_messages(session: Session, findings: list[Finding]) -> list[str]:
    ids = [f.ref for f in findings]
    session.execute(
        update(AOLAction)
        .where(AOLAction.id.in_(ids), AOLAction.status.in_(CLAIMABLE_STATUSES))
        .values(queued_at_utc=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    sweeper = _sweeper()
    paused_all, paused = sweeper.paused_scopes()
    sent = 0 if paused_all else sweeper.dispatch_due(db_now(session), exclude_types=paused)
    return [f"marked {len(ids)} action(s) unsent and ran the dispatch step: {sent} sent"]


def find_expired_leases(session: Session) -> list[Finding]:
    scene = _scene(session)
    rows = _action_rows(
        session,
        AOLAction.status == ActionStatus.RUNNING,
        or_(
            AOLAction.lease_expires_at_utc.is_(None),
            AOLAction.lease_expires_at_utc < scene.now - scene.slack,
        ),
    )
    return [
        Finding(
            "expired_lease",
            f"action {row.id}",
            f"RUNNING {row.action_type} under {row.claimed_by}: "
            + (
                "no lease at all"
                if row.lease_expires_at_utc is None
                else f"lease expired {_late(scene.now, row.lease_expires_at_utc)}"
            )
            + " and no sweep moved it to RETRY/DLQ",
            repairable=True,
            ref=row.id,
        )
        for row in rows
    ]


def repair_expired_leases(session: Session, findings: list[Finding]) -> list[str]:
    from aicmo.orchestration.sweeper import SweepReport

    now = db_now(session)
    # A RUNNING row with no lease has no owner anyone could wait for: let it expire now.
    session.execute(
        update(AOLAction)
        .where(
            AOLAction.id.in_([f.ref for f in findings]),
            AOLAction.status == ActionStatus.RUNNING,
            AOLAction.lease_expires_at_utc.is_(None),
        )
        .values(lease_expires_at_utc=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    report = SweepReport()
    _sweeper().expire_leases(now + timedelta(microseconds=1), report)
    return [
        f"expired {report.lease_expired} lease(s): "
        f"{report.lease_expired - report.dead_lettered} to RETRY, {report.dead_lettered} to DLQ"
    ]


def find_overdue_pending(session: Session) -> list[Finding]:
    scene = _scene(session)
    if scene.paused_all:
        return []
    horizon = timedelta(seconds=scene.settings.dispatch_horizon_seconds)
    rows = _action_rows(
        session,
        AOLAction.status == ActionStatus.PENDING,
        *_movable(scene),
        # The sweeper promotes a PENDING row once it is due within the horizon.
        AOLAction.not_before_utc < scene.now + horizon - scene.slack,
    )
    return [
        Finding(
            "overdue_pending",
            f"action {row.id}",
            f"PENDING {row.action_type}: due {_late(scene.now, row.not_before_utc)} "
            f"(or within the {horizon.total_seconds():g}s horizon) and no sweep promoted it "
            "(is beat running, with a worker on its queue?)",
            repairable=True,
            ref=row.id,
        )
        for row in rows
    ]


def repair_overdue_pending(session: Session, findings: list[Finding]) -> list[str]:
    sweeper = _sweeper()
    paused_all, paused = sweeper.paused_scopes()
    sent = 0 if paused_all else sweeper.dispatch_due(db_now(session), exclude_types=paused)
    return [f"ran the dispatch step: {sent} action(s) sent"]


CHECKS: list[Check] = [
    Check(
        "unknown_type",
        "waiting actions whose type this process's registry does not know",
        find_unknown_types,
    ),
    Check(
        "lost_message",
        "READY/RETRY actions with no message and no resend coming",
        find_lost_messages,
        repair_lost_messages,
    ),
    Check(
        "expired_lease",
        "RUNNING actions whose lease is missing or expired a few sweeps ago",
        find_expired_leases,
        repair_expired_leases,
    ),
    Check(
        "overdue_pending",
        "PENDING actions due (within the horizon) a few sweep intervals ago",
        find_overdue_pending,
        repair_overdue_pending,
    ),
]


# -- campaigns (aicmo.cam.reconcile: one implementation, also run by resume and every tick) --


def _campaign_findings(items: list[Any]) -> list[Finding]:
    return [
        Finding(
            item.kind,
            f"{'message' if item.kind == 'stranded_message' else 'tick lease'} {item.subject_id}",
            f"campaign {item.campaign_id}: {item.detail}",
            repairable=True,
            ref=item,
        )
        for item in items
    ]


def find_stranded_messages(session: Session) -> list[Finding]:
    from aicmo.cam import reconcile

    return _campaign_findings(reconcile.find_stranded_messages(session, limit=MAX_FINDINGS))


def find_orphan_campaign_leases(session: Session) -> list[Finding]:
    from aicmo.cam import reconcile

    scene = _scene(session)
    # Expired a few sweeps ago, not a moment ago: a tick may be taking it over right now.
    return _campaign_findings(reconcile.find_orphan_leases(session, scene.now - scene.slack))


def repair_campaign_items(session: Session, findings: list[Finding]) -> list[str]:
    from aicmo.cam import reconcile

    done = reconcile.repair(session, [f.ref for f in findings])
    session.commit()
    return [f"{r.item.kind} {r.item.subject_id}: {r.done}" for r in done]


CHECKS.extend(
    [
        Check(
            "stranded_message",
            "QUEUED outreach messages whose publish action is gone or ended without them",
            find_stranded_messages,
            repair_campaign_items,
        ),
        Check(
            "orphan_campaign_lease",
            "campaign tick leases held by no live run (expired, or their tick action ended)",
            find_orphan_campaign_leases,
            repair_campaign_items,
        ),
    ]
)


def find_braked(session: Session) -> list[Finding]:
    """Campaigns an automatic brake paused, and braked sending domains: only an operator
    moves them on (``aicmo campaigns resume`` / ``release-domain``)."""
    from sqlalchemy import select

    from aicmo.cam.models import Campaign, CampaignStatus
    from aicmo.cam.outcomes.brakes import list_domain_brakes

    found = [
        Finding(
            "braked",
            f"campaign {campaign.id}",
            f"paused by a brake: {campaign.brake_reason}; look at its complaints and bounces, "
            f"then `aicmo campaigns resume {campaign.id}`",
            repairable=False,
        )
        for campaign in session.scalars(
            select(Campaign)
            .where(Campaign.status == CampaignStatus.PAUSED, Campaign.brake_reason.is_not(None))
            .limit(MAX_FINDINGS)
        )
    ]
    found += [
        Finding(
            "braked",
            f"sending domain {brake.domain}",
            f"braked: {brake.reason}; then `aicmo campaigns release-domain {brake.domain}`",
            repairable=False,
        )
        for brake in list_domain_brakes(session)
    ]
    return found


CHECKS.append(
    Check(
        "braked",
        "campaigns and sending domains an automatic brake paused (an operator resumes them)",
        find_braked,
    )
)


def register_check(check: Check) -> Check:
    """Add a check (e.g. campaigns' reconciliation); a name is registered once."""
    for index, existing in enumerate(CHECKS):
        if existing.name == check.name:
            CHECKS[index] = check
            return check
    CHECKS.append(check)
    return check


def _selected(names: Sequence[str] | None) -> list[Check]:
    if not names:
        return list(CHECKS)
    unknown = set(names) - {c.name for c in CHECKS}
    if unknown:
        raise ValueError(f"unknown doctor check(s): {', '.join(sorted(unknown))}")
    return [c for c in CHECKS if c.name in names]


def find(session: Session, checks: Sequence[str] | None = None) -> list[Finding]:
    """Every finding of the chosen checks (default: all)."""
    found: list[Finding] = []
    for check in _selected(checks):
        found.extend(check.find(session))
    return found


def run(
    session: Session, *, repair: bool = False, checks: Sequence[str] | None = None
) -> DoctorReport:
    """The census; with ``repair``, fix what can be fixed safely, then count again.

    A repair commits ``session`` (give it one that is not inside ``session.begin()``): the
    sweeper steps it runs next read what it wrote."""
    selected = _selected(checks)
    report = DoctorReport(at=db_now(session))
    findings = {c.name: c.find(session) for c in selected}
    report.found_before_repair = sum(len(f) for f in findings.values())
    if repair:
        for check in selected:
            fixable = [f for f in findings[check.name] if f.repairable]
            if fixable and check.repair is not None:
                # End the census's transaction first: on SQLite it holds the write lock the
                # sweeper steps of a repair need.
                session.commit()
                report.repaired.extend(
                    f"{check.name}: {line}" for line in check.repair(session, fixable)
                )
                session.commit()
        if report.repaired:
            findings = {c.name: c.find(session) for c in selected}
    report.findings = [f for c in selected for f in findings[c.name]]
    return report


def report(*, repair: bool = False, checks: Sequence[str] | None = None) -> DoctorReport:
    """The census in a session of its own: what the CLI, the console and the API call."""
    from aicmo.db import session_factory

    # A plain session: a repair commits its own steps before the sweeper takes over.
    with session_factory()() as session:
        found = run(session, repair=repair, checks=checks)
        session.commit()
    return found
