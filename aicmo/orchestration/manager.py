"""Operator actions on the table: replay, cancel, pause and resume.

Each works in the caller's session (so it can be part of a larger transaction) and sends
what it must only after that transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from aicmo.db import db_clock, rowcount, utcnow
from aicmo.orchestration.dispatch import Dispatch
from aicmo.orchestration.errors import ActionNotFound, InvalidTransition
from aicmo.orchestration.models import AOLAction, AOLControl, AOLExecutionLog, AOLSlotWaiter
from aicmo.orchestration.queue import dispatch_after_commit
from aicmo.orchestration.registry import registry
from aicmo.orchestration.status import (
    CANCELLABLE_STATUSES,
    CLAIMABLE_STATUSES,
    REPLAYABLE_STATUSES,
    ActionStatus,
    LogEvent,
)

log = logging.getLogger(__name__)


def get_action(session: Session, action_id: int) -> AOLAction:
    # populate_existing: the row is shared with workers, never trust a cached copy.
    action = session.get(AOLAction, action_id, populate_existing=True)
    if action is None:
        raise ActionNotFound(action_id)
    return action


def _names(statuses: Sequence[ActionStatus]) -> str:
    return "/".join(s.value for s in statuses)


def replay(session: Session, action_id: int, by: str = "operator") -> AOLAction:
    """DLQ/FAILED -> READY with a fresh attempt budget; the log keeps the history."""
    if not replay_many(session, [action_id], by=by):
        action = get_action(session, action_id)
        raise InvalidTransition(
            f"action {action_id} is {action.status}; only "
            f"{_names(REPLAYABLE_STATUSES)} actions can be replayed"
        )
    return get_action(session, action_id)


def replay_many(session: Session, action_ids: Sequence[int], by: str = "operator") -> list[int]:
    if not action_ids:
        return []
    now = db_clock(session)  # due and queued-at: compared by the sweeper and the claim
    previous = dict(
        session.execute(
            select(AOLAction.id, AOLAction.last_error).where(
                AOLAction.id.in_(action_ids), AOLAction.status.in_(REPLAYABLE_STATUSES)
            )
        ).all()
    )
    if not previous:
        return []
    rows = session.execute(
        update(AOLAction)
        .where(AOLAction.id.in_(list(previous)), AOLAction.status.in_(REPLAYABLE_STATUSES))
        .values(
            status=ActionStatus.READY,
            attempts=0,
            not_before_utc=now,
            queued_at_utc=now,
            last_error=None,
            result_json=None,
            finished_at_utc=None,
            started_at_utc=None,
            lease_expires_at_utc=None,
            updated_at_utc=now,
        )
        .returning(AOLAction.id, AOLAction.action_type, AOLAction.priority)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        drop_waiters(session, [row.id for row in rows])
        session.execute(
            insert(AOLExecutionLog),
            [
                {
                    "action_id": action_id,
                    "event": LogEvent.REPLAYED,
                    "worker": by,
                    "error": previous.get(action_id),
                    "created_at_utc": now,
                }
                for action_id, _, _ in rows
            ],
        )
        dispatch_after_commit(
            session,
            [Dispatch(i, t, priority=p, batchable=True) for i, t, p in rows],
        )
        for action_id, action_type, _ in rows:
            log.info(
                "action %s %s replayed by %s",
                action_id,
                action_type,
                by,
                extra={
                    "action_id": action_id,
                    "action_type": action_type,
                    "event": LogEvent.REPLAYED.value,
                    "by": by,
                },
            )
    return [row.id for row in rows]


def replay_dead_letters(
    session: Session, action_type: str | None = None, by: str = "operator", limit: int = 10_000
) -> list[int]:
    query = select(AOLAction.id).where(AOLAction.status == ActionStatus.DLQ)
    if action_type:
        registry.get(action_type)  # a clear error for a misspelt type
        query = query.where(AOLAction.action_type == action_type)
    ids = list(session.scalars(query.order_by(AOLAction.id).limit(limit)))
    return replay_many(session, ids, by=by)


def cancel(session: Session, action_id: int, by: str = "operator") -> AOLAction:
    """PENDING/READY/RETRY -> CANCELLED. A message already sent finds nothing to claim."""
    now = db_clock(session)
    changed = rowcount(
        session.execute(
            update(AOLAction)
            .where(AOLAction.id == action_id, AOLAction.status.in_(CANCELLABLE_STATUSES))
            .values(
                status=ActionStatus.CANCELLED,
                finished_at_utc=now,
                updated_at_utc=now,
                queued_at_utc=None,
            )
            .execution_options(synchronize_session=False)
        )
    )
    action = get_action(session, action_id)
    if not changed:
        raise InvalidTransition(
            f"action {action_id} is {action.status}; only "
            f"{_names(CANCELLABLE_STATUSES)} actions can be cancelled"
        )
    drop_waiters(session, [action_id])
    session.execute(
        insert(AOLExecutionLog).values(
            action_id=action_id, event=LogEvent.CANCELLED, worker=by, created_at_utc=now
        )
    )
    return action


def drop_waiters(session: Session, action_ids: Sequence[int]) -> None:
    """An action leaving the parked state by an operator's hand (cancel, replay, purge) is no
    longer a waiter of its concurrency key: its row goes in the same transaction."""
    if action_ids:
        session.execute(
            delete(AOLSlotWaiter)
            .where(AOLSlotWaiter.action_id.in_(list(action_ids)))
            .execution_options(synchronize_session=False)
        )


# -- pause ---------------------------------------------------------------------------------


def _flag_name(action_type: str | None) -> str:
    if action_type is None:
        return "pause"
    registry.get(action_type)  # a clear error for a misspelt type
    return f"pause:{action_type}"


def pause(
    session: Session,
    action_type: str | None = None,
    reason: str | None = None,
    by: str = "operator",
) -> None:
    """Workers leave matching actions unclaimed (no attempt is spent) until resume."""
    name = _flag_name(action_type)
    flag = session.get(AOLControl, name)
    if flag is None:
        flag = AOLControl(name=name)
        session.add(flag)
    flag.enabled, flag.reason, flag.updated_by, flag.updated_at_utc = True, reason, by, utcnow()
    session.flush()
    log.warning("%s on (%s)", name, reason or "no reason given", extra={"event": "PAUSED"})


def resume(session: Session, action_type: str | None = None, by: str = "operator") -> int:
    """Lift the pause. The actions it held back are marked unsent, so the next sweep sends
    them (their messages were consumed while paused). Returns how many."""
    name = _flag_name(action_type)
    session.execute(delete(AOLControl).where(AOLControl.name == name))
    query = update(AOLAction).where(AOLAction.status.in_(CLAIMABLE_STATUSES))
    if action_type:
        query = query.where(AOLAction.action_type == action_type)
    count = rowcount(
        session.execute(
            query.values(queued_at_utc=None).execution_options(synchronize_session=False)
        )
    )
    log.warning(
        "%s off (by %s); %d waiting action(s) will be sent",
        name,
        by,
        count,
        extra={"event": "RESUMED"},
    )
    return count


def paused_flags(session: Session) -> list[AOLControl]:
    return list(session.scalars(select(AOLControl).where(AOLControl.enabled)))
