"""The states an action moves through, and the events its execution log records."""

from __future__ import annotations

from enum import StrEnum


class ActionStatus(StrEnum):
    PENDING = "PENDING"  # due later than the dispatch horizon: waits in the database
    READY = "READY"  # due now (or within the horizon): a message is on its way
    RUNNING = "RUNNING"  # claimed by a worker, under a lease
    RETRY = "RETRY"  # failed transiently, runs again at not_before_utc
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"  # permanent error: not retried
    DLQ = "DLQ"  # transient errors used up max_attempts
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {ActionStatus.SUCCESS, ActionStatus.FAILED, ActionStatus.DLQ, ActionStatus.CANCELLED}
)
CLAIMABLE_STATUSES = (ActionStatus.READY, ActionStatus.RETRY)
WAITING_STATUSES = (ActionStatus.PENDING, ActionStatus.READY, ActionStatus.RETRY)
REPLAYABLE_STATUSES = (ActionStatus.DLQ, ActionStatus.FAILED)
CANCELLABLE_STATUSES = WAITING_STATUSES


class LogEvent(StrEnum):
    ENQUEUED = "ENQUEUED"
    NOTE = "NOTE"  # a line written by application code (the original's level + message)
    CLAIMED = "CLAIMED"
    SUCCEEDED = "SUCCEEDED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    DEFERRED = "DEFERRED"
    DEAD_LETTERED = "DEAD_LETTERED"
    FAILED = "FAILED"
    SKIPPED_DUPLICATE = "SKIPPED_DUPLICATE"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    LEASE_LOST = "LEASE_LOST"
    REPLAYED = "REPLAYED"
    CANCELLED = "CANCELLED"
    # Waiting, but of a type this process's registry does not know (removed or renamed by a
    # deploy): left as it is, out of every dispatch batch, until the type is back or an
    # operator cancels it (`aicmo doctor` lists it).
    SET_ASIDE = "SET_ASIDE"
