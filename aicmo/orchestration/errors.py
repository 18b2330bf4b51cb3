"""Exceptions of the AOL.

Two families matter to the engine: errors raised at enqueue (the caller's input is wrong;
nothing is written) and errors raised by handlers, which the engine classifies as permanent
(FAILED, never retried) or transient (RETRY with backoff, then DLQ). Any exception a handler
raises that is not a :class:`PermanentError` counts as transient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


def format_validation_error(error: ValidationError) -> list[str]:
    """A pydantic error as one line per problem: ``field.path: message``."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "payload"
        problems.append(f"{where}: {item['msg']}")
    return problems


class AOLError(Exception):
    """Base of every aicmo orchestration error."""


# -- enqueue-time errors: the caller's input is refused, no row is written -------------------


class EnqueueError(AOLError, ValueError):
    """The action cannot be enqueued as given."""


class UnknownActionType(EnqueueError):
    def __init__(self, action_type: str, known: list[str]) -> None:
        self.action_type = action_type
        shown = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown action type {action_type!r} (known: {shown})")


class InvalidPayload(EnqueueError):
    def __init__(self, action_type: str, problems: list[str]) -> None:
        self.action_type = action_type
        self.problems = problems
        super().__init__(f"invalid payload for {action_type}: " + "; ".join(problems))


class PayloadTooLarge(EnqueueError):
    def __init__(self, action_type: str, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"payload for {action_type} is {size} bytes as JSON, over the limit of {limit} bytes"
        )


class InvalidSchedule(EnqueueError):
    """not_before is naive or otherwise unusable."""


class InvalidIdempotencyKey(EnqueueError):
    pass


class IdempotencyConflict(AOLError):
    """The key is taken by an action with another type or payload (the Stripe rule)."""

    def __init__(self, idempotency_key: str, existing_id: int, reason: str) -> None:
        self.idempotency_key = idempotency_key
        self.existing_id = existing_id
        super().__init__(
            f"idempotency key {idempotency_key!r} is already used by action {existing_id} "
            f"with {reason}"
        )


# -- operator errors -----------------------------------------------------------------------


class ActionNotFound(AOLError, LookupError):
    def __init__(self, action_id: int) -> None:
        self.action_id = action_id
        super().__init__(f"action {action_id} does not exist")


class InvalidTransition(AOLError):
    pass


# -- handler errors: how the engine classifies a failure -----------------------------------


class PermanentError(AOLError):
    """Retrying cannot help: the action goes straight to FAILED."""


class TransientError(AOLError):
    """Worth retrying. ``retry_after`` (seconds) overrides the backoff, e.g. from Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Deferred(TransientError):
    """Not a failure: the work could not start yet (our own rate limit had no room). The action
    runs again after ``retry_after`` and the attempt is given back, so waiting for a turn can
    never push an action into the DLQ."""


class RealRunUnconfigured(PermanentError):
    """Live mode was asked for but no real gateway is configured for this channel."""


class LeaseLost(AOLError):
    """The claim expired and another worker may own the action: this run must not commit."""


# -- what the Celery layer raises so Flower shows FAILURE / RETRY ---------------------------


class ActionFailed(AOLError):
    """The action ended FAILED (permanent error)."""


class ActionDeadLettered(AOLError):
    """The action ended in the DLQ (transient errors used up max_attempts)."""


class ActionRetrying(AOLError):
    """The action failed transiently and will run again."""
