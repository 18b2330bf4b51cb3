"""Actions: list (keyset pages), show, enqueue, replay, cancel, and the registered types.

Each function opens its own short transaction and returns plain data, so the CLI, the
console and the JSON API give the same answers for the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import literal_column, select

from aicmo.db import session_scope
from aicmo.orchestration import manager
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.redaction import MASK, redact
from aicmo.orchestration.registry import registry
from aicmo.orchestration.status import CANCELLABLE_STATUSES, REPLAYABLE_STATUSES, ActionStatus

STATUS_NAMES = [s.value for s in ActionStatus]
MAX_PAGE = 100_000
_SECRET_KEY = re.compile(
    r"(?i)(pass(word|wd)?|secret|token|api[_-]?key|authorization|credential|private[_-]?key)"
)


def redact_payload(value: Any) -> Any:
    """A payload fit for a page: values under secret-looking keys masked, and every string
    passed through the log redactor (registered secrets, bearer tokens, URL passwords)."""
    if isinstance(value, dict):
        return {
            k: MASK if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact_payload(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_payload(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def action_dict(
    action: AOLAction, with_logs: bool = False, redacted: bool = False
) -> dict[str, Any]:
    payload = redact_payload(action.payload_json) if redacted else action.payload_json
    data: dict[str, Any] = {
        "id": action.id,
        "idempotency_key": action.idempotency_key,
        "action_type": action.action_type,
        "status": action.status,
        "attempts": action.attempts,
        "max_attempts": action.max_attempts,
        "not_before_utc": iso(action.not_before_utc),
        "created_at_utc": iso(action.created_at_utc),
        "updated_at_utc": iso(action.updated_at_utc),
        "started_at_utc": iso(action.started_at_utc),
        "finished_at_utc": iso(action.finished_at_utc),
        "queued_at_utc": iso(action.queued_at_utc),
        "priority": action.priority,  # the broker priority of its messages; None: 0, the top
        "claimed_by": action.claimed_by,
        "last_error": action.last_error,
        "payload": payload,
        "result": action.result_json,
    }
    data["waiting"] = waiting_for(action.status, action.last_error)
    if with_logs:
        data["logs"] = [log_dict(entry) for entry in action.logs]
    return data


def waiting_for(status: str, last_error: str | None) -> str | None:
    """What a deferred action waits for ("waiting for send window until ..."), if anything:
    a deferral's message says so in its own words (see aicmo.cam.admission)."""
    if status not in (ActionStatus.RETRY, ActionStatus.PENDING) or not last_error:
        return None
    if last_error.startswith("waiting for "):  # parked for a concurrency slot
        return last_error
    _, _, message = last_error.partition(": ")
    return message if message.startswith("waiting for ") else None


def log_dict(entry: AOLExecutionLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "event": entry.event,
        "attempt": entry.attempt,
        "worker": entry.worker,
        "duration_ms": entry.duration_ms,
        "error": entry.error,
        "artifact_ref": entry.artifact_ref,
        "artifact_sha256": entry.artifact_sha256,
        "details": entry.details_json,
        "created_at_utc": iso(entry.created_at_utc),
    }


def normalise_types(types: Sequence[str]) -> list[str]:
    """Upper-cased type names; a misspelt type is an error, not an empty list."""
    wanted = [t.strip().upper() for t in types]
    for name in wanted:
        registry.get(name)
    return wanted


@dataclass(frozen=True)
class ActionFilter:
    statuses: Sequence[str] = ()
    types: Sequence[str] = ()
    key: str | None = None  # exact idempotency key (its unique index)
    campaign_id: int | None = None


def session_dialect() -> str:
    from aicmo.db import get_engine

    return get_engine().dialect.name


def _campaign_of_payload(dialect: str) -> Any:
    """The payload's campaign_id, spelt exactly as the expression index of migration 0005
    (``ix_aol_actions_campaign``), so the filter is answered from it."""
    if dialect == "postgresql":
        return literal_column("(payload_json ->> 'campaign_id')")
    return literal_column("json_extract(payload_json, '$.campaign_id')")


def list_actions(
    filters: ActionFilter | None = None,
    limit: int = 50,
    before_id: int | None = None,
    redacted: bool = False,
) -> list[dict[str, Any]]:
    """Newest first, ``limit`` rows with ids below ``before_id`` (keyset pagination: the
    next page starts before the last id shown, so a page costs the same at any depth)."""
    filters = filters or ActionFilter()
    limit = max(1, min(limit, MAX_PAGE))
    query = select(AOLAction).order_by(AOLAction.id.desc()).limit(limit)
    statuses = [s.upper() for s in filters.statuses]
    for status in statuses:
        ActionStatus(status)
    if statuses:
        query = query.where(AOLAction.status.in_(statuses))
    types = normalise_types(filters.types)
    if types:
        query = query.where(AOLAction.action_type.in_(types))
    if filters.key:
        query = query.where(AOLAction.idempotency_key == filters.key)
    if filters.campaign_id is not None:
        dialect = session_dialect()
        wanted: Any = str(filters.campaign_id) if dialect == "postgresql" else filters.campaign_id
        query = query.where(_campaign_of_payload(dialect) == wanted)
    if before_id is not None:
        query = query.where(AOLAction.id < before_id)
    with session_scope() as session:
        return [action_dict(a, redacted=redacted) for a in session.scalars(query)]


def show_action(action_id: int, redacted: bool = False) -> dict[str, Any]:
    """One action with its execution log (``ActionNotFound`` when there is none)."""
    with session_scope() as session:
        action = manager.get_action(session, action_id)
        data = action_dict(action, with_logs=True, redacted=redacted)
        data["can_replay"] = action.status in REPLAYABLE_STATUSES
        data["can_cancel"] = action.status in CANCELLABLE_STATUSES
        return data


def enqueue(
    action_type: str, payload: Any, key: str | None = None, when: datetime | None = None
) -> dict[str, Any]:
    from aicmo.orchestration.queue import ActionQueue

    enqueued = ActionQueue.enqueue(action_type.strip().upper(), payload, key, when)
    return {
        "id": enqueued.action_id,
        "idempotency_key": enqueued.idempotency_key,
        "action_type": enqueued.action_type,
        "status": enqueued.status,
        "created": enqueued.created,
    }


def replay(action_ids: Sequence[int], by: str) -> list[int]:
    """Run DLQ/FAILED actions again with a fresh attempt budget (each one must be replayable)."""
    with session_scope() as session:
        return [manager.replay(session, action_id, by=by).id for action_id in action_ids]


def replay_dead_letters(action_type: str | None, by: str, limit: int = 10_000) -> list[int]:
    scope = action_type.strip().upper() if action_type else None
    with session_scope() as session:
        return manager.replay_dead_letters(session, scope, by=by, limit=limit)


def cancel(action_ids: Sequence[int], by: str) -> list[int]:
    with session_scope() as session:
        return [manager.cancel(session, action_id, by=by).id for action_id in action_ids]


def types() -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "task": spec.task_name,
            "queue": spec.queue,
            "max_attempts": spec.retry.max_attempts,
            "soft_time_limit": spec.soft_time_limit,
            "time_limit": spec.time_limit,
            "description": spec.description,
        }
        for spec in registry
    ]


def dlq_counts() -> dict[str, int]:
    """Dead-lettered actions by type (from the (status, type) index: O(DLQ), not O(table))."""
    from sqlalchemy import func

    with session_scope() as session:
        return {
            t: int(n)
            for t, n in session.execute(
                select(AOLAction.action_type, func.count())
                .where(AOLAction.status == ActionStatus.DLQ)
                .group_by(AOLAction.action_type)
                .order_by(AOLAction.action_type)
            )
        }
