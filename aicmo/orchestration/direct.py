"""Running one action now, from code, as the original AICMO's ``handle_*`` functions did.

The original's daemon called ``handle_post_social(session, action_id, payload, proof_mode)``
and the handler marked the row SUCCESS or FAILED itself. Here the same call is one complete
run through the worker's own :class:`~aicmo.orchestration.executor.Executor`: the same claim,
fencing token, lease, validation, outcome statements and execution-log rows, so a direct call
and a worker can never both run an action, and nothing about outcomes is implemented twice.

What a direct call does, in order:

1. Commits ``session`` if it is in a transaction, as the original's handlers did (they
   committed it when they marked the row): the run must see the action row, and on SQLite an
   open transaction would hold the write lock the run needs.
2. Makes a waiting action (PENDING, READY or RETRY) due now: the caller asked for it to run.
3. Runs it with the given ``proof_mode`` and the caller's ``payload`` (keys the original put in
   payloads, such as ``idempotency_key``, are accepted by the payload models). A payload other
   than the row's raises :class:`IdempotencyConflict` and runs nothing; an invalid one records
   FAILED with the validation message and raises it (a ``ValueError``).
4. Returns the result (SUCCESS, with the artifacts' paths and sha256) or raises what the
   handler raised, after the outcome is recorded: FAILED for a permanent error such as
   :class:`RealRunUnconfigured`, RETRY (with its message sent, as a worker's retry is) or DLQ
   for a transient one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.orm import Session

from aicmo.config import get_settings
from aicmo.db import rowcount, utcnow
from aicmo.orchestration.dispatch import Dispatch
from aicmo.orchestration.errors import (
    ActionNotFound,
    AOLError,
    IdempotencyConflict,
    InvalidTransition,
)
from aicmo.orchestration.executor import Executor, Outcome, OutcomeKind, default_worker_name
from aicmo.orchestration.manager import paused_flags
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import canonical_json, publish_now
from aicmo.orchestration.registry import ActionType, registry
from aicmo.orchestration.status import WAITING_STATUSES, ActionStatus

__all__ = ["run_direct"]


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind


def _checked(spec: ActionType, payload: Any) -> dict[str, Any] | None:
    """The payload's validated form, or None when it does not validate."""
    try:
        data: dict[str, Any] = spec.payload_model.model_validate(payload).model_dump(mode="json")
    except ValidationError:
        return None
    return data


def _make_due_now(engine: Engine, spec: ActionType, action_id: int, payload: Any) -> None:
    """A waiting action becomes READY and due now, marked as sent (no message is needed: this
    process runs it next; if it dies first, the sweeper's lost-message rule sends one)."""
    now = utcnow()
    with Session(engine) as session, session.begin():
        found = session.execute(
            select(
                AOLAction.status,
                AOLAction.action_type,
                AOLAction.payload_json,
                AOLAction.idempotency_key,
            ).where(AOLAction.id == action_id)
        ).first()
        if found is None:
            raise ActionNotFound(action_id)
        status, action_type, stored, key = found
        if action_type != spec.name:
            raise InvalidTransition(f"action {action_id} is {action_type}, not {spec.name}")
        if status not in WAITING_STATUSES:
            raise InvalidTransition(
                f"action {action_id} is {status}; a direct call runs only waiting "
                "(PENDING/READY/RETRY) actions (replay a FAILED or DLQ one first)"
            )
        flags = ("pause", f"pause:{spec.name}")
        paused = [flag.name for flag in paused_flags(session) if flag.name in flags]
        if paused:
            # Left exactly as it was: it runs when the operator resumes.
            raise InvalidTransition(f"action {action_id} not run: {paused[0]} is on")
        given = _checked(spec, payload)
        if given is not None:
            kept = _checked(spec, stored)
            if canonical_json(given) != canonical_json(kept if kept is not None else stored):
                raise IdempotencyConflict(key, action_id, "a different payload")
        changed = session.execute(
            update(AOLAction)
            .where(AOLAction.id == action_id, AOLAction.status.in_(WAITING_STATUSES))
            .values(
                status=ActionStatus.READY,
                not_before_utc=now,
                queued_at_utc=now,
                updated_at_utc=now,
            )
            .execution_options(synchronize_session=False)
        )
        if not rowcount(changed):
            raise InvalidTransition(f"action {action_id} was taken by a worker meanwhile")


def _raise_for(outcome: Outcome, spec: ActionType) -> None:
    if outcome.kind is OutcomeKind.RETRY:
        # What the task layer does with a worker's retry: a message with a countdown, or
        # nothing when it is too far off (the sweeper sends it when due).
        delay = outcome.retry_in()
        if delay <= get_settings().dispatch_horizon_seconds:
            publish_now([Dispatch(outcome.action_id, spec.name, delay)])
    if outcome.exception is not None:
        raise outcome.exception
    if outcome.kind in (OutcomeKind.FAILED, OutcomeKind.RETRY, OutcomeKind.DEAD_LETTERED):
        raise AOLError(f"action {outcome.action_id} {outcome.kind.value}: {outcome.error}")
    raise InvalidTransition(
        f"action {outcome.action_id} did not run ({outcome.kind.value}"
        + (f": {outcome.error}" if outcome.error else "")
        + ")"
    )


def _run(
    engine: Engine, spec: ActionType, action_id: int, payload: Any, proof_mode: bool
) -> Outcome:
    _make_due_now(engine, spec, action_id, payload)
    executor = Executor(
        worker=f"direct:{default_worker_name()}",
        settings=get_settings().model_copy(update={"proof_mode": proof_mode}),
        engine=engine,
    )
    try:
        return executor.run(action_id, spec.name, payload=payload)
    finally:
        if executor.store.direct is not None:
            executor.store.direct.close()  # its own psycopg connection, opened for this run


def run_direct(
    session: Session,
    action_type: str,
    action_id: int,
    payload: Any,
    proof_mode: bool,
) -> dict[str, Any]:
    """Run the waiting action ``action_id`` now, as a worker would; see the module docstring."""
    spec = registry.get(action_type)
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    if session.in_transaction():
        session.commit()
    try:
        outcome = _run(_engine(session), spec, action_id, payload, proof_mode)
    finally:
        # The caller's copy of the row is stale either way: its next read loads the outcome.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, AOLAction) and obj.id == action_id:
                session.expire(obj)
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return outcome.result or {}
    _raise_for(outcome, spec)
    raise AssertionError("unreachable")  # pragma: no cover
