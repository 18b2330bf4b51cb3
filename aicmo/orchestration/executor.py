"""Running one action: claim it, run its handler, record the outcome.

This is the whole idempotency layer around a handler, and it knows nothing of Celery: the task
wrapper in ``tasks/`` calls :meth:`Executor.run` and turns the :class:`Outcome` into Celery's
vocabulary (success, ``retry``, failure).

* Claim: one ``UPDATE .. WHERE id AND status IN (READY, RETRY) AND due AND not paused
  RETURNING``. A duplicate or stale message claims nothing and is logged as skipped.
* Handler: runs in a transaction that also records SUCCESS, guarded by the claim's fencing
  token, so its database writes commit exactly once or not at all.
* Failure: permanent errors go to FAILED; anything else to RETRY with backoff, or DLQ once
  ``attempts`` reaches ``max_attempts``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import InterfaceError, OperationalError

from aicmo.config import Settings, get_settings
from aicmo.db import db_now, get_engine, new_session, utcnow
from aicmo.orchestration import concurrency
from aicmo.orchestration.artifacts import ArtifactWriter, artifact_fields
from aicmo.orchestration.batch_store import Following
from aicmo.orchestration.context import ActionContext, RunningAction
from aicmo.orchestration.errors import (
    Deferred,
    LeaseLost,
    PermanentError,
    TransientError,
    format_validation_error,
)
from aicmo.orchestration.redaction import redact
from aicmo.orchestration.registry import ActionType, registry
from aicmo.orchestration.status import CLAIMABLE_STATUSES, ActionStatus, LogEvent
from aicmo.orchestration.store import ActionStore, Claimed, StoreUnavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# "Due" is judged by the database's clock; a producer writes due times with its measured
# offset to that clock (aicmo.db.db_clock), which may be a little off: allow for it.
CLAIM_SKEW = timedelta(seconds=1)
MAX_ERROR_LENGTH = 4000
MAX_UNANSWERED = 10_000


class OutcomeKind(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    RETRY = "RETRY"
    DEAD_LETTERED = "DEAD_LETTERED"
    SKIPPED = "SKIPPED"  # duplicate or stale message: nothing to claim
    NOT_DUE = "NOT_DUE"  # arrived before not_before: the sweeper sends it again when due
    PAUSED = "PAUSED"  # left unclaimed; runs after resume with no attempt spent
    NOT_FOUND = "NOT_FOUND"
    WAITING = "WAITING"  # parked for a concurrency slot; woken when one frees, no attempt spent
    LEASE_LOST = "LEASE_LOST"  # the claim expired under us: nothing of this run was kept


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    action_id: int
    action_type: str
    attempt: int = 0
    error: str | None = None
    retry_at: datetime | None = None
    result: dict[str, Any] | None = None
    # What the handler (or the payload's validation) raised, for callers that re-raise it.
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    # Seconds until retry_at, measured on the database's clock (this host's may be off).
    delay: float | None = None

    def retry_in(self, now: datetime | None = None) -> float:
        if self.delay is not None:
            return max(0.0, self.delay)
        if self.retry_at is None:
            return 0.0
        return max(0.0, (self.retry_at - (now or utcnow())).total_seconds())


class DatabaseUnavailable(Exception):
    """The claim could not reach the database; the message should be tried again later."""


def running_action(claimed: Claimed, action_type: str, token: str) -> RunningAction:
    """What a handler reads as ``ctx.action``: the claimed row, under this run's token."""
    return RunningAction(
        id=claimed.id,
        idempotency_key=claimed.idempotency_key,
        action_type=action_type,
        payload_json=claimed.payload_json,
        status=ActionStatus.RUNNING,
        attempts=claimed.attempts,
        max_attempts=claimed.max_attempts,
        not_before_utc=claimed.not_before_utc,
        created_at_utc=claimed.created_at_utc,
        claimed_by=token,
    )


def default_worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        text = "invalid payload: " + "; ".join(format_validation_error(exc))
    else:
        message = str(exc)
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return redact(text)[:MAX_ERROR_LENGTH]


def _jsonable(result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    if not isinstance(result, dict):
        result = {"result": result}
    loaded: dict[str, Any] = json.loads(json.dumps(result, default=str))
    return loaded


@dataclass
class Executor:
    worker: str = field(default_factory=default_worker_name)
    settings: Settings = field(default_factory=get_settings)
    engine: Engine | None = None
    # Exception types that mean "the soft time limit hit" (Celery's, passed in by tasks/).
    timeout_errors: tuple[type[BaseException], ...] = ()
    _store: ActionStore | None = field(default=None, init=False, repr=False)
    _tokens: itertools.count[int] = field(default_factory=itertools.count, init=False, repr=False)
    _nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:6], init=False, repr=False)
    # action id (a batch: its sorted ids) -> token (a batch: token prefix) of a claim whose
    # answer never came (the database was unreachable): the message's retry asks first
    # whether that claim went through. See remember_unanswered / take_unanswered.
    _unanswered: dict[int | tuple[int, ...], str] = field(
        default_factory=dict, init=False, repr=False
    )
    # Claim tokens whose concurrency slot was freed in their SUCCESS transaction already.
    _released: set[str] = field(default_factory=set, init=False, repr=False)

    def _engine(self) -> Engine:
        return self.engine or get_engine(self.settings.database_url)

    @property
    def store(self) -> ActionStore:
        engine = self._engine()
        if self._store is None or self._store.engine is not engine:
            self._store = ActionStore(engine)
        return self._store

    def new_token(self) -> str:
        """Unique per claim: the fencing token of this run."""
        return f"{self.worker}/{self._nonce}{next(self._tokens)}"

    # -- the run ---------------------------------------------------------------------------

    def run(
        self, action_id: int, action_type: str, payload: dict[str, Any] | None = None
    ) -> Outcome:
        """Claim, run and record one action. ``payload``: validate and run this one instead of
        the row's (the original's direct ``handle_*`` calls pass theirs)."""
        spec = registry.get(action_type)
        unanswered = self.take_unanswered(action_id)
        token = unanswered or self.new_token()
        claimed = self._claim(action_id, spec, token, reclaim=unanswered is not None)
        if isinstance(claimed, Outcome):
            return claimed
        action = running_action(claimed, spec.name, token)
        if spec.concurrency is None:
            return self._execute(action, claimed, spec, token, payload)
        try:
            return self._execute(action, claimed, spec, token, payload)
        finally:
            # After the outcome is recorded: the next waiter of the key may run now. A
            # success through the handler's session freed its slot in that very transaction.
            if token in self._released:
                self._released.discard(token)
            else:
                try:
                    concurrency.release(self.store, token)
                except Exception:
                    log.exception("action %s: slot not released (the sweeper frees it)", action.id)

    def _execute(
        self,
        action: RunningAction,
        claimed: Claimed,
        spec: ActionType,
        token: str,
        payload: dict[str, Any] | None,
        following: Following | None = None,
    ) -> Outcome:
        started = time.monotonic()
        try:
            checked = spec.payload_model.model_validate(
                claimed.payload_json if payload is None else payload
            )
        except ValidationError as exc:
            return self._record_failure(action, claimed, spec, token, exc, started, following)
        try:
            return self._run_handler(action, claimed, spec, token, checked, started, following)
        except LeaseLost:
            return self._lease_lost(action, token, started)
        except Exception as exc:
            return self._record_failure(action, claimed, spec, token, exc, started, following)

    # -- claim -----------------------------------------------------------------------------

    def _claim(
        self, action_id: int, spec: ActionType, token: str, *, reclaim: bool = False
    ) -> Claimed | Outcome:
        """``reclaim``: ``token`` was in flight when the database went away; its claim may
        have committed, so "RUNNING under this token" counts as claimed."""
        if spec.concurrency is not None:
            return self._claim_keyed(action_id, spec, token, reclaim=reclaim)
        for attempt in (1, 2):
            try:
                claimed = self.store.claim(
                    action_id,
                    spec.name,
                    token,
                    lease_seconds=spec.lease_seconds(),
                    skew_seconds=CLAIM_SKEW.total_seconds(),
                    reclaim=reclaim or attempt == 2,
                )
                break
            except StoreUnavailable as exc:
                self.remember_unanswered(action_id, token)
                raise DatabaseUnavailable(describe_error(exc)) from exc
            except (OperationalError, InterfaceError) as exc:
                # A restarted PostgreSQL leaves dead connections in the pool; the first error
                # invalidates them all, so one immediate second try usually gets through.
                if attempt == 2 or not getattr(exc, "connection_invalidated", False):
                    self.remember_unanswered(action_id, token)
                    raise DatabaseUnavailable(describe_error(exc)) from exc
        if claimed is not None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "action %s %s claimed (attempt %s)",
                    action_id,
                    spec.name,
                    claimed.attempts,
                    extra={
                        "action_id": action_id,
                        "action_type": spec.name,
                        "event": LogEvent.CLAIMED.value,
                        "attempt": claimed.attempts,
                        "worker": token,
                    },
                )
            return claimed
        with new_session(self._engine()) as session, session.begin():
            return self._why_not_claimed(session, action_id, spec, db_now(session))

    def _claim_keyed(
        self, action_id: int, spec: ActionType, token: str, *, reclaim: bool
    ) -> Claimed | Outcome:
        """The claim of a type with a concurrency key: a slot and the action in one
        statement, or the action parked until a slot frees (aicmo.orchestration.concurrency)."""
        try:
            if reclaim:
                mine = self.store.running_under(action_id, token)
                if mine is not None:
                    return mine
            keyed = concurrency.claim(
                self.store,
                spec,
                action_id,
                token,
                lease_seconds=spec.lease_seconds(),
                skew_seconds=CLAIM_SKEW.total_seconds(),
            )
        except (StoreUnavailable, OperationalError, InterfaceError) as exc:
            self.remember_unanswered(action_id, token)
            raise DatabaseUnavailable(describe_error(exc)) from exc
        if keyed.claimed is not None:
            return keyed.claimed
        if keyed.parked:
            log.info(
                "action %s %s waits for a slot of %s",
                action_id,
                spec.name,
                keyed.key,
                extra={"action_id": action_id, "event": "WAITING"},
            )
            return Outcome(OutcomeKind.WAITING, action_id, spec.name, error=keyed.key)
        with new_session(self._engine()) as session, session.begin():
            return self._why_not_claimed(session, action_id, spec, db_now(session))

    def remember_unanswered(self, claim: int | tuple[int, ...], token: str) -> None:
        # Bounded: after a long outage the oldest are forgotten (their leases end anyway).
        while len(self._unanswered) >= MAX_UNANSWERED:
            self._unanswered.pop(next(iter(self._unanswered)))
        self._unanswered[claim] = token

    def take_unanswered(self, claim: int | tuple[int, ...]) -> str | None:
        return self._unanswered.pop(claim, None)

    def _why_not_claimed(
        self, session: Session, action_id: int, spec: ActionType, now: datetime
    ) -> Outcome:
        from aicmo.orchestration.models import AOLAction, AOLControl, AOLExecutionLog

        found = session.execute(
            select(AOLAction.status, AOLAction.not_before_utc, AOLAction.action_type).where(
                AOLAction.id == action_id
            )
        ).first()
        if found is None:
            log.warning(
                "message for unknown action %s dropped", action_id, extra={"action_id": action_id}
            )
            return Outcome(OutcomeKind.NOT_FOUND, action_id, spec.name)
        status, not_before, actual_type = found
        if actual_type != spec.name:
            log.error(
                "message for action %s sent to task of type %s, but it is %s",
                action_id,
                spec.name,
                actual_type,
                extra={"action_id": action_id},
            )
            return Outcome(OutcomeKind.NOT_FOUND, action_id, spec.name)
        if status in CLAIMABLE_STATUSES:
            paused = session.scalar(
                select(AOLControl.name).where(
                    AOLControl.enabled, AOLControl.name.in_(["pause", f"pause:{spec.name}"])
                )
            )
            if paused:
                log.info(
                    "action %s left unclaimed: %s is on",
                    action_id,
                    paused,
                    extra={"action_id": action_id, "event": "PAUSED"},
                )
                return Outcome(OutcomeKind.PAUSED, action_id, spec.name)
            if not_before > now:
                delay = (not_before - now).total_seconds()
                return Outcome(
                    OutcomeKind.NOT_DUE, action_id, spec.name, retry_at=not_before, delay=delay
                )
        session.execute(
            insert(AOLExecutionLog).values(
                action_id=action_id,
                event=LogEvent.SKIPPED_DUPLICATE,
                worker=self.worker,
                details_json={"status": status},
                created_at_utc=now,
            )
        )
        log.info(
            "duplicate message for action %s skipped (status %s)",
            action_id,
            status,
            extra={"action_id": action_id, "event": LogEvent.SKIPPED_DUPLICATE.value},
        )
        return Outcome(OutcomeKind.SKIPPED, action_id, spec.name, error=f"status {status}")

    # -- handler ---------------------------------------------------------------------------

    def _run_handler(
        self,
        action: RunningAction,
        claimed: Claimed,
        spec: ActionType,
        token: str,
        payload: Any,
        started: float,
        following: Following | None = None,
    ) -> Outcome:
        engine = self._engine()
        artifacts = ArtifactWriter(self.settings.artifact_dir, spec.name, action.idempotency_key)
        ctx = ActionContext(
            action=action,
            proof_mode=self.settings.proof_mode,
            artifacts=artifacts,
            worker=token,
            session_factory=lambda: new_session(engine, expire_on_commit=False),
        )
        try:
            result = _jsonable(spec.handler(ctx, payload))
            if artifacts.written:
                result = {**(result or {}), **artifact_fields(artifacts.written)}
            last = artifacts.written[-1] if artifacts.written else None
            duration_ms = (time.monotonic() - started) * 1000
            values: dict[str, Any] = {
                "result": result,
                "now": utcnow(),
                "duration_ms": duration_ms,
                "artifact_ref": last.ref if last else None,
                "artifact_sha256": last.sha256 if last else None,
            }
            if ctx.session_used:
                # The handler's writes and SUCCESS commit together, or not at all.
                session = ctx.session
                session.flush()
                if not self.store.succeed(
                    session.connection(), claimed, token, following=following, **values
                ):
                    raise LeaseLost(f"action {action.id}: claim {token} is no longer held")
                woken = None
                if spec.concurrency is not None:
                    # The slot is freed with SUCCESS, in one commit: no transaction of its own.
                    # In a savepoint: a failed release must not undo the success (the
                    # release after the run, or the sweeper, frees the slot then).
                    try:
                        with session.begin_nested():
                            woken = concurrency.release_in(session.connection(), token)
                    except Exception:  # a dead connection fails the commit below anyway
                        log.exception("action %s: slot not released with its success", action.id)
                session.commit()
                if woken is not None:
                    self._released.add(token)
                    concurrency.send_woken(woken)
            elif not self.store.succeed_alone(claimed, token, following, **values):
                raise LeaseLost(f"action {action.id}: claim {token} is no longer held")
        finally:
            if ctx.session_used:
                ctx.session.close()  # rolls back whatever did not commit
        if log.isEnabledFor(logging.INFO):
            log.info(
                "action %s %s succeeded (attempt %s, %.1f ms)",
                action.id,
                spec.name,
                action.attempts,
                duration_ms,
                extra={
                    "action_id": action.id,
                    "action_type": spec.name,
                    "event": "SUCCEEDED",
                    "attempt": action.attempts,
                    "duration_ms": round(duration_ms, 2),
                    "artifact_sha256": last.sha256 if last else None,
                },
            )
        return Outcome(OutcomeKind.SUCCEEDED, action.id, spec.name, action.attempts, result=result)

    # -- failures --------------------------------------------------------------------------

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, PermanentError | ValidationError)

    def _record_failure(
        self,
        action: RunningAction,
        claimed: Claimed,
        spec: ActionType,
        token: str,
        exc: BaseException,
        started: float,
        following: Following | None = None,
    ) -> Outcome:
        if self.timeout_errors and isinstance(exc, self.timeout_errors):
            error = f"soft time limit of {spec.soft_time_limit:g}s exceeded"
        else:
            error = describe_error(exc)
        attempt = action.attempts
        delay: float | None = None
        deferred = isinstance(exc, Deferred)
        if self.is_permanent(exc):
            kind, status, event = OutcomeKind.FAILED, ActionStatus.FAILED, LogEvent.FAILED
        elif attempt >= action.max_attempts and not deferred:
            kind, status, event = (
                OutcomeKind.DEAD_LETTERED,
                ActionStatus.DLQ,
                LogEvent.DEAD_LETTERED,
            )
        else:
            kind, status = OutcomeKind.RETRY, ActionStatus.RETRY
            event = LogEvent.DEFERRED if deferred else LogEvent.RETRY_SCHEDULED
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            delay = max(0.0, spec.retry.delay_for(attempt) if retry_after is None else retry_after)
        duration_ms = (time.monotonic() - started) * 1000
        # Within the horizon the task layer sends the retry message itself (Celery's retry,
        # with a countdown); beyond it the sweeper sends it when due.
        kept, retry_at = self.store.fail(
            claimed,
            token,
            status=status.value,
            event=event.value,
            error=error,
            duration_ms=duration_ms,
            retry_delay=delay,
            queue_retry=delay is not None and delay <= self.settings.dispatch_horizon_seconds,
            details={"retry_in_seconds": round(delay, 3)} if delay is not None else None,
            refund_attempt=deferred,
            following=following,
        )
        if not kept:
            kind, event = OutcomeKind.LEASE_LOST, LogEvent.LEASE_LOST
        level = logging.WARNING if kind is OutcomeKind.RETRY else logging.ERROR
        log.log(
            level,
            "action %s %s: %s after attempt %s/%s: %s",
            action.id,
            spec.name,
            kind.value,
            attempt,
            action.max_attempts,
            error,
            extra={
                "action_id": action.id,
                "action_type": spec.name,
                "event": event.value,
                "attempt": attempt,
                "error": error,
                "duration_ms": round(duration_ms, 2),
            },
        )
        return Outcome(
            kind,
            action.id,
            spec.name,
            attempt,
            error=error,
            retry_at=retry_at,
            delay=delay,
            exception=exc,
        )

    def _lease_lost(self, action: RunningAction, token: str, started: float) -> Outcome:
        error = "lease lost: the claim expired before the run finished; its writes were discarded"
        from aicmo.orchestration.models import AOLExecutionLog

        with new_session(self._engine()) as session, session.begin():
            session.execute(
                insert(AOLExecutionLog).values(
                    action_id=action.id,
                    event=LogEvent.LEASE_LOST,
                    attempt=action.attempts,
                    worker=token,
                    duration_ms=(time.monotonic() - started) * 1000,
                    error=error,
                    created_at_utc=utcnow(),
                )
            )
        log.error("action %s: %s", action.id, error, extra={"action_id": action.id})
        return Outcome(
            OutcomeKind.LEASE_LOST, action.id, action.action_type, action.attempts, error=error
        )
