"""One Celery task per action type, named ``aol.<TYPE>``, taking only ``action_id``.

Calling a task the Celery way (``post_social.delay(payload, idempotency_key=...)``) goes
through the idempotent enqueue; a call with just an action id (what the dispatcher, Celery's
``retry`` and operators send) runs that action.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from celery import Celery, Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from aicmo.config import get_settings
from aicmo.orchestration.dispatch import Dispatch
from aicmo.orchestration.errors import (
    ActionDeadLettered,
    ActionFailed,
    ActionRetrying,
    InvalidSchedule,
)
from aicmo.orchestration.registry import ActionType, registry

if TYPE_CHECKING:
    from aicmo.orchestration.batch import ActionClock
    from aicmo.orchestration.executor import Executor
    from aicmo.orchestration.handle import ActionHandle

log = logging.getLogger(__name__)

# While the database is unreachable, try the message again this often (the row is intact).
DATABASE_RETRY_SECONDS = 5.0
_CALL_OPTIONS = {"countdown", "eta", "idempotency_key", "not_before"}

_executors: dict[int, Executor] = {}
_clocks: dict[int, ActionClock] = {}


def load_engine() -> None:
    """Import the engine (the executor on SQLAlchemy Core and psycopg): in a pool child, once,
    right after the fork. The worker's main process never runs an action, so it never holds
    it; the ORM waits for a handler that uses ``ctx.session`` (or for an enqueue)."""
    import aicmo.orchestration.batch  # noqa: F401 (the executor too)

    if get_settings().database_url.startswith("postgresql"):
        # The hot path's driver (aicmo.orchestration.store imports it where it connects):
        # here, so a child's first action does not spend its soft time limit on it.
        import psycopg  # noqa: F401


def executor() -> Executor:
    """One per process: a forked pool child must not share its parent's."""
    pid = os.getpid()
    found = _executors.get(pid)
    if found is None:
        from aicmo.orchestration.executor import Executor

        found = _executors[pid] = Executor(timeout_errors=(SoftTimeLimitExceeded,))
    return found


def clock() -> ActionClock:
    """Per-action time limits inside a batch message (one watchdog per process)."""
    pid = os.getpid()
    found = _clocks.get(pid)
    if found is None:
        from aicmo.orchestration.batch import ActionClock

        found = _clocks[pid] = ActionClock(SoftTimeLimitExceeded)
    return found


def _is_dispatch(args: Any, kwargs: Any) -> bool:
    return (
        isinstance(args, list | tuple)
        and len(args) == 1
        and isinstance(args[0], int)
        and not isinstance(args[0], bool)
        and not kwargs
    )


def _schedule(options: dict[str, Any]) -> datetime | None:
    countdown, eta = options.get("countdown"), options.get("eta")
    not_before = options.get("not_before")
    if sum(value is not None for value in (countdown, eta, not_before)) > 1:
        raise InvalidSchedule("give one of countdown, eta or not_before")
    if countdown is not None:
        return datetime.now(UTC) + timedelta(seconds=float(countdown))
    when = eta if eta is not None else not_before
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when


class ActionTask(Task):
    """Base of every ``aol.<TYPE>`` task."""

    action_type: ClassVar[str] = ""
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # the database counts attempts, not Celery
    typing = False
    # Expected outcomes: logged without a traceback.
    throws = (ActionFailed, ActionDeadLettered, ActionRetrying)

    @property
    def spec(self) -> ActionType:
        return registry.get(self.action_type)

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if _is_dispatch(args, kwargs):
            return super().apply_async(args, kwargs, **options)
        return self.enqueue(args, kwargs, options)

    def enqueue(self, args: Any, kwargs: Any, options: dict[str, Any]) -> ActionHandle:
        fields = dict(kwargs or {})
        for name in _CALL_OPTIONS & set(fields):
            options.setdefault(name, fields.pop(name))
        unsupported = set(options) - _CALL_OPTIONS
        if unsupported:
            raise TypeError(
                f"{self.name}: options {sorted(unsupported)} are not supported for actions "
                f"(supported: {sorted(_CALL_OPTIONS)})"
            )
        args = tuple(args or ())
        if len(args) > 1 or (args and fields):
            raise TypeError(f"{self.name}: pass the payload as one dict or as keyword arguments")
        payload = args[0] if args else fields
        from aicmo.orchestration.handle import ActionHandle
        from aicmo.orchestration.queue import ActionQueue

        enqueued = ActionQueue.enqueue(
            self.action_type, payload, options.get("idempotency_key"), _schedule(options)
        )
        return ActionHandle(
            enqueued.action_id, enqueued.idempotency_key, enqueued.action_type, enqueued.created
        )

    def run(self, action_id: int) -> dict[str, Any] | None:
        from aicmo.orchestration.executor import DatabaseUnavailable, OutcomeKind

        try:
            outcome = executor().run(int(action_id), self.action_type)
        except DatabaseUnavailable as exc:
            log.warning(
                "database unavailable for action %s; retrying the message in %ss",
                action_id,
                DATABASE_RETRY_SECONDS,
                extra={"action_id": action_id},
            )
            raise self.retry(countdown=DATABASE_RETRY_SECONDS, exc=exc) from None
        kind = outcome.kind
        if kind is OutcomeKind.SUCCEEDED:
            return None  # the row is the record; a small result keeps the main process light
        if kind is OutcomeKind.FAILED:
            raise ActionFailed(f"action {action_id}: {outcome.error}")
        if kind is OutcomeKind.DEAD_LETTERED:
            raise ActionDeadLettered(
                f"action {action_id} dead-lettered after {outcome.attempt} attempts: "
                f"{outcome.error}"
            )
        if kind is OutcomeKind.RETRY:
            delay = outcome.retry_in()
            reason = ActionRetrying(
                f"action {action_id} attempt {outcome.attempt}: {outcome.error}"
            )
            if delay <= get_settings().dispatch_horizon_seconds:
                # Celery's own retry: a new message with a countdown, Flower shows RETRY.
                raise self.retry(countdown=delay, exc=reason)
            # Too far off for the broker: the sweeper sends it when due. Raising Retry
            # without a message still shows RETRY in Flower.
            raise Retry(
                f"sweeper will send it at {outcome.retry_at}", exc=reason, when=outcome.retry_at
            )
        if kind is OutcomeKind.NOT_DUE:
            delay = outcome.retry_in()
            if delay <= get_settings().dispatch_horizon_seconds:
                from aicmo.orchestration.queue import publish_now

                publish_now([Dispatch(action_id, self.action_type, delay, message_priority(self))])
        return {"action_id": action_id, "status": kind.value, "detail": outcome.error}


def message_priority(task: Task) -> int | None:
    """The broker priority of the message being run, for the messages it sends on (Celery's
    own ``retry`` keeps it the same way): a bulk publish's retry stays behind other work."""
    return (task.request.delivery_info or {}).get("priority")


class BatchTask(Task):
    """Base of every ``aol.<TYPE>.batch`` task: one message, many action ids of one type.

    Its Celery state is the batch's: SUCCESS with a result of counts ({"actions": 100,
    "SUCCEEDED": 97, "RETRY": 2, "FAILED": 1}), FAILURE only when the batch itself broke.
    Each action keeps its own row, attempts, token and execution log; a retry within the
    horizon gets its own single ``aol.<TYPE>`` message (Flower: a new task), a DLQ or FAILED
    action is recorded on its row and in the counts.
    """

    action_type: ClassVar[str] = ""
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None
    typing = False

    def run(self, action_ids: list[int]) -> dict[str, int]:
        from aicmo.orchestration import batch
        from aicmo.orchestration.executor import DatabaseUnavailable, OutcomeKind
        from aicmo.orchestration.queue import publish_now

        try:
            outcomes = batch.run_batch(executor(), action_ids, self.action_type, clock())
        except DatabaseUnavailable as exc:
            log.warning(
                "database unavailable for a batch of %d; retrying the message in %ss",
                len(action_ids),
                DATABASE_RETRY_SECONDS,
            )
            raise self.retry(countdown=DATABASE_RETRY_SECONDS, exc=exc) from None
        horizon = get_settings().dispatch_horizon_seconds
        priority = message_priority(self)
        for outcome in outcomes:
            if outcome.kind in (OutcomeKind.RETRY, OutcomeKind.NOT_DUE):
                delay = outcome.retry_in()
                if delay <= horizon:
                    # One message of its own, as a single action's retry; beyond the horizon
                    # the sweeper sends it when due.
                    publish_now([Dispatch(outcome.action_id, self.action_type, delay, priority)])
        return batch.counts(outcomes)


def register_action_tasks(app: Celery) -> dict[str, Task]:
    """Make the ``aol.<TYPE>`` task of every registered action type."""
    made: dict[str, Task] = {}
    for spec in registry.specs():

        def run(self: ActionTask, action_id: int) -> dict[str, Any] | None:
            return ActionTask.run(self, action_id)

        run.__name__ = run.__qualname__ = spec.name.lower()
        made[spec.name] = app.task(
            bind=True,
            base=ActionTask,
            name=spec.task_name,
            action_type=spec.name,
            queue=spec.queue,
            soft_time_limit=spec.soft_time_limit,
            time_limit=spec.time_limit,
        )(run)

        def run_batch(self: BatchTask, action_ids: list[int]) -> dict[str, int]:
            return BatchTask.run(self, action_ids)

        run_batch.__name__ = run_batch.__qualname__ = spec.name.lower() + "_batch"
        # No task-level limits: each message states its own hard limit (the backstop for
        # its size); per action the limits are kept by batch.ActionClock.
        app.task(
            bind=True,
            base=BatchTask,
            name=spec.batch_task_name,
            action_type=spec.name,
            queue=spec.queue,
        )(run_batch)
    return made
