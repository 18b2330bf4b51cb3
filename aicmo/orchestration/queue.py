"""Enqueueing actions: validated at the boundary, idempotent, and transactional.

``ActionQueue.enqueue_action`` writes in the caller's transaction; the broker message is sent
only after that transaction commits (a session event), so a rollback leaves neither row nor
message. If the process dies between commit and publish, the row is READY with a message
that never came: the sweeper sends it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Insert, Table, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction, make_transient_to_detached

from aicmo.config import get_settings
from aicmo.db import db_clock, get_engine, session_scope
from aicmo.orchestration.dispatch import Dispatch, Dispatcher, get_dispatcher
from aicmo.orchestration.errors import (
    EnqueueError,
    IdempotencyConflict,
    InvalidIdempotencyKey,
    InvalidPayload,
    InvalidSchedule,
    PayloadTooLarge,
    format_validation_error,
)
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.registry import ActionType, registry
from aicmo.orchestration.status import CLAIMABLE_STATUSES, ActionStatus

log = logging.getLogger(__name__)

_PENDING_DISPATCH = "aol_pending_dispatch"
MAX_KEY_LENGTH = 255


# -- validation ----------------------------------------------------------------------------


def _too_deep(value: Any, limit: int) -> str | None:
    """The first place nested deeper than ``limit``, found without recursion (a deep enough
    payload would make any recursive walk, json.dumps included, raise RecursionError)."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "payload")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            children: Iterable[tuple[Any, Any]] = item.items()
        elif isinstance(item, list | tuple | set | frozenset):
            children = enumerate(item)
        else:
            continue
        if depth >= limit:
            return f"{path}: nested deeper than {limit} levels"
        for key, child in children:
            if isinstance(child, dict | list | tuple | set | frozenset):
                stack.append((child, depth + 1, f"{path}.{key}"))
    return None


def _find_bad_value(value: Any, path: str = "payload") -> str | None:
    """The first problem pydantic lets through: naive datetimes, NUL, lone surrogates."""
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return f"{path}: naive datetime {value.isoformat()} (a timezone is required)"
        return None
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path}: text contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path}: text is not valid UTF-8 (lone surrogate)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (found := _find_bad_value(key, f"{path} key")):
                return found
            if found := _find_bad_value(item, f"{path}.{key}"):
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            if found := _find_bad_value(item, f"{path}[{index}]"):
                return found
    return None


def canonical_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_size(spec: ActionType, text: str) -> None:
    limit = get_settings().max_payload_bytes
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLarge(spec.name, size, limit)


def validate_payload(spec: ActionType, payload: Any) -> dict[str, Any]:
    """Validate ``payload`` against the type's model; return its JSON-ready form."""
    if isinstance(payload, BaseModel) and not isinstance(payload, spec.payload_model):
        payload = payload.model_dump()
    if isinstance(payload, BaseModel):
        model = payload
    else:
        if not isinstance(payload, dict):
            raise InvalidPayload(
                spec.name, [f"payload: expected a JSON object, got {type(payload).__name__}"]
            )
        raw_problem = _too_deep(payload, get_settings().max_payload_depth) or _find_bad_value(
            payload
        )
        if raw_problem:
            raise InvalidPayload(spec.name, [raw_problem])
        # Measure before validating: a huge payload is refused for its size, cheaply.
        check_size(spec, json.dumps(payload, default=str, ensure_ascii=False))
        try:
            model = spec.payload_model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload(spec.name, format_validation_error(exc)) from None
    problem = _find_bad_value(model)
    if problem:
        raise InvalidPayload(spec.name, [problem])
    return model.model_dump(mode="json")


def validate_key(idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return uuid.uuid4().hex
    if not isinstance(idempotency_key, str):
        raise InvalidIdempotencyKey(
            f"idempotency key must be a string, got {type(idempotency_key).__name__}"
        )
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"idempotency key must be 1 to {MAX_KEY_LENGTH} characters, got {len(idempotency_key)}"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in idempotency_key):
        raise InvalidIdempotencyKey("idempotency key must not contain control characters")
    try:
        idempotency_key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidIdempotencyKey("idempotency key is not valid UTF-8") from None
    return idempotency_key


@dataclass(frozen=True, slots=True)
class PreparedAction:
    spec: ActionType
    payload: dict[str, Any]
    payload_text: str
    idempotency_key: str
    not_before: datetime
    status: ActionStatus
    queued_at: datetime | None
    countdown: float

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "action_type": self.spec.name,
            "payload_json": self.payload,
            "status": self.status.value,
            "not_before_utc": self.not_before,
            "attempts": 0,
            "max_attempts": self.spec.retry.max_attempts,
            "created_at_utc": now,
            "updated_at_utc": now,
            "queued_at_utc": self.queued_at,
        }


def prepare(
    action_type: str,
    payload: Any,
    idempotency_key: str | None,
    not_before: datetime | None,
    now: datetime,
) -> PreparedAction:
    """Every check an enqueue makes before touching the database."""
    settings = get_settings()
    spec = registry.get(action_type) if isinstance(action_type, str) else None
    if spec is None:
        raise InvalidPayload(str(action_type), ["action_type: must be a string"])
    key = validate_key(idempotency_key)
    data = validate_payload(spec, payload)
    text = canonical_json(data)
    check_size(spec, text)
    if not_before is None:
        due = now
    elif not isinstance(not_before, datetime):
        raise InvalidSchedule(f"not_before must be a datetime, got {type(not_before).__name__}")
    elif not_before.tzinfo is None or not_before.utcoffset() is None:
        raise InvalidSchedule(
            f"not_before {not_before.isoformat()} is a naive datetime; give a timezone "
            "(e.g. datetime.now(UTC))"
        )
    else:
        due = max(now, not_before.astimezone(now.tzinfo))
    wait = (due - now).total_seconds()
    if wait <= settings.dispatch_horizon_seconds:
        return PreparedAction(spec, data, text, key, due, ActionStatus.READY, due, wait)
    return PreparedAction(spec, data, text, key, due, ActionStatus.PENDING, None, 0.0)


# -- publishing after commit ---------------------------------------------------------------


def _pending(session: Session) -> list[Dispatch]:
    pending: list[Dispatch] = session.info.setdefault(_PENDING_DISPATCH, [])
    return pending


def dispatch_after_commit(session: Session, items: Iterable[Dispatch]) -> None:
    """Send these messages once ``session`` commits; forget them if it rolls back."""
    _pending(session).extend(items)


def publish_now(items: Sequence[Dispatch], dispatcher: Dispatcher | None = None) -> bool:
    """Publish, or leave the rows for the sweeper. Never raises: the rows are the truth."""
    if not items:
        return True
    try:
        (dispatcher or get_dispatcher()).publish(items)
        return True
    except Exception as exc:
        log.warning(
            "publish of %d action(s) failed; the sweeper will send them: %s",
            len(items),
            exc,
            extra={"action_ids": [item.action_id for item in items[:50]]},
        )
    # Mark them unqueued so the sweeper's next pass sends them instead of waiting out the
    # lost-message grace period. If the database is also unreachable, the grace rule still
    # catches them.
    try:
        with session_scope() as session:
            session.execute(
                update(AOLAction)
                .where(AOLAction.id.in_([item.action_id for item in items]))
                .where(AOLAction.status.in_([ActionStatus.READY, ActionStatus.RETRY]))
                .values(queued_at_utc=None)
            )
    except Exception:
        log.exception("could not mark %d unpublished action(s) for the sweeper", len(items))
    return False


_OUTCOME = "aol_transaction_outcome"


# SQLAlchemy fires after_commit for a released SAVEPOINT too, so publishing there would send
# messages before the real commit. The outcome is noted in after_commit/after_rollback and
# acted on only when the outermost transaction ends.
def _on_after_commit(session: Session) -> None:
    session.info[_OUTCOME] = "commit"


def _on_after_rollback(session: Session) -> None:
    session.info[_OUTCOME] = "rollback"


def _on_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested or transaction.parent is not None:
        # A savepoint's end decides nothing: a message for a row that a rolled-back
        # savepoint removed finds nothing to claim and is dropped by the worker.
        return
    outcome = session.info.pop(_OUTCOME, None)
    items = session.info.pop(_PENDING_DISPATCH, None)
    if items and outcome == "commit":
        publish_now(items)


def install_session_hooks() -> None:
    from sqlalchemy import event

    if not event.contains(Session, "after_transaction_end", _on_transaction_end):
        event.listen(Session, "after_commit", _on_after_commit)
        event.listen(Session, "after_rollback", _on_after_rollback)
        event.listen(Session, "after_transaction_end", _on_transaction_end)


install_session_hooks()


# -- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueued:
    action_id: int
    idempotency_key: str
    action_type: str
    status: str
    created: bool


_TABLE: Table = AOLAction.__table__  # type: ignore[assignment]
_UNSET_COLUMNS = {
    "last_error": None,
    "started_at_utc": None,
    "finished_at_utc": None,
    "claimed_by": None,
    "lease_expires_at_utc": None,
    "result_json": None,
}


_INSERTS: dict[str, Insert] = {}


def _insert(session: Session) -> Insert:
    """INSERT .. ON CONFLICT (idempotency_key) DO NOTHING, built once per dialect (values are
    passed as parameters, so the compiled form is cached too)."""
    dialect = session.get_bind().dialect.name
    found = _INSERTS.get(dialect)
    if found is None:
        if dialect == "postgresql":
            base: Insert = postgresql.insert(_TABLE).on_conflict_do_nothing(
                index_elements=["idempotency_key"]
            )
        elif dialect == "sqlite":
            base = sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["idempotency_key"])
        else:
            raise RuntimeError(f"unsupported database {dialect!r} (PostgreSQL or SQLite)")
        found = _INSERTS[dialect] = base
    return found


def _check_same(prepared: PreparedAction, existing_id: int, action_type: str, payload: Any) -> None:
    if action_type != prepared.spec.name:
        raise IdempotencyConflict(
            prepared.idempotency_key, existing_id, f"type {action_type}, not {prepared.spec.name}"
        )
    if canonical_json(payload) != prepared.payload_text:
        raise IdempotencyConflict(prepared.idempotency_key, existing_id, "a different payload")


class ActionQueue:
    """The one way actions enter the system (``.delay`` on a task comes here too)."""

    @staticmethod
    def enqueue_action(
        session: Session,
        action_type: str,
        payload: Any,
        idempotency_key: str | None = None,
        not_before: datetime | None = None,
    ) -> AOLAction:
        """Add one action in the caller's transaction and return it.

        The same key with the same type and payload returns the existing action and sends
        nothing; with another type or payload it raises :class:`IdempotencyConflict`.
        """
        action, _created = _enqueue_one(session, action_type, payload, idempotency_key, not_before)
        return action

    @staticmethod
    def enqueue_many(
        session: Session,
        actions: Sequence[tuple[str, Any] | tuple[str, Any, str | None] | dict[str, Any]],
        *,
        priority: int | None = None,
    ) -> list[Enqueued]:
        """Add many actions in one round trip (per 1,000 rows), all or nothing.
        ``priority``: the broker priority of their messages (``dispatch.BULK_PRIORITY``),
        kept on the rows for every later message (retries, resends, wake-ups, replays).

        Each item is ``(type, payload)``, ``(type, payload, key)`` or a dict with
        ``action_type``, ``payload``, ``idempotency_key`` and ``not_before``. Every item is
        validated before anything is written; an invalid one raises naming its index.
        """
        now = db_clock(session)
        prepared: list[PreparedAction] = []
        for index, item in enumerate(actions):
            try:
                prepared.append(_prepare_item(item, now))
            except EnqueueError as exc:
                exc.args = (f"item {index}: {exc}",)
                raise
        by_key: dict[str, PreparedAction] = {}
        for one in prepared:
            seen = by_key.get(one.idempotency_key)
            if seen is None:
                by_key[one.idempotency_key] = one
            elif seen.spec.name != one.spec.name or seen.payload_text != one.payload_text:
                raise IdempotencyConflict(
                    one.idempotency_key, -1, "two different actions in one batch"
                )
        unique = list(by_key.values())
        if not unique:
            return []

        results: dict[str, Enqueued] = {}
        # A savepoint, so that a conflict found after the insert leaves the caller's
        # transaction exactly as it was.
        with session.begin_nested():
            rows = [p.row(now) | {"priority": priority} for p in unique]
            inserted = (
                session.connection()
                .execute(_insert(session).returning(_TABLE.c.id, _TABLE.c.idempotency_key), rows)
                .all()
            )
            for action_id, key in inserted:
                new = by_key[key]
                results[key] = Enqueued(action_id, key, new.spec.name, new.status.value, True)
            missing = [key for key in by_key if key not in results]
            for start in range(0, len(missing), 1000):
                chunk = missing[start : start + 1000]
                existing = session.execute(
                    select(
                        AOLAction.id,
                        AOLAction.idempotency_key,
                        AOLAction.action_type,
                        AOLAction.payload_json,
                        AOLAction.status,
                    ).where(AOLAction.idempotency_key.in_(chunk))
                ).all()
                for action_id, key, action_type, payload, status in existing:
                    _check_same(by_key[key], action_id, action_type, payload)
                    results[key] = Enqueued(action_id, key, action_type, status, False)
        dispatch_after_commit(
            session,
            [
                Dispatch(
                    results[p.idempotency_key].action_id,
                    p.spec.name,
                    p.countdown,
                    priority,
                    batchable=True,
                )
                for p in unique
                if results[p.idempotency_key].created and p.status is ActionStatus.READY
            ],
        )
        return [results[p.idempotency_key] for p in prepared]

    @staticmethod
    def enqueue(
        action_type: str,
        payload: Any,
        idempotency_key: str | None = None,
        not_before: datetime | None = None,
    ) -> Enqueued:
        """Enqueue in a transaction of its own (what ``task.delay`` does). On PostgreSQL
        that is one autocommit statement (:mod:`aicmo.orchestration.enqueue_direct`)."""
        engine = get_engine()
        if engine.dialect.name == "postgresql":
            from aicmo.orchestration.enqueue_direct import insert_autocommit

            new_id, prepared = insert_autocommit(
                engine, lambda now: prepare(action_type, payload, idempotency_key, not_before, now)
            )
            if new_id is not None and prepared is not None:
                if prepared.status is ActionStatus.READY:
                    publish_now([Dispatch(new_id, prepared.spec.name, prepared.countdown)])
                return Enqueued(
                    new_id,
                    prepared.idempotency_key,
                    prepared.spec.name,
                    prepared.status.value,
                    True,
                )
            if prepared is not None:  # the existing row, or a retry of this one, has its key
                idempotency_key = prepared.idempotency_key
        with session_scope() as session:
            action, created = _enqueue_one(
                session, action_type, payload, idempotency_key, not_before
            )
            result = Enqueued(
                action.id, action.idempotency_key, action.action_type, action.status, created
            )
        return result


def _enqueue_one(
    session: Session,
    action_type: str,
    payload: Any,
    idempotency_key: str | None,
    not_before: datetime | None,
) -> tuple[AOLAction, bool]:
    now = db_clock(session)  # due and queued-at times are compared by other processes
    prepared = prepare(action_type, payload, idempotency_key, not_before, now)
    row = prepared.row(now)
    new_id = _insert_one(session, row)
    if new_id is None:
        action = session.scalars(
            select(AOLAction)
            .where(AOLAction.idempotency_key == prepared.idempotency_key)
            .execution_options(populate_existing=True)
        ).one()
        _check_same(prepared, action.id, action.action_type, action.payload_json)
        return action, False
    action = AOLAction(id=new_id, **row, **_UNSET_COLUMNS)
    # Known in full from what was inserted: attach it without a SELECT.
    make_transient_to_detached(action)
    session.add(action)
    if prepared.status is ActionStatus.READY:
        dispatch_after_commit(session, [Dispatch(new_id, prepared.spec.name, prepared.countdown)])
    return action, True


def _insert_one(session: Session, row: dict[str, Any]) -> int | None:
    """Insert one action in the session's transaction; None if the key exists."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Straight to psycopg, still inside the session's transaction: SQLAlchemy's
        # statement machinery costs more CPU than this one-row insert does.
        from psycopg.types.json import Jsonb

        from aicmo.orchestration.enqueue_direct import INSERT_PG

        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute(INSERT_PG, {**row, "payload_json": Jsonb(row["payload_json"])})
            found = cursor.fetchone()
        return int(found[0]) if found else None
    result = connection.execute(_insert(session).returning(_TABLE.c.id), row).scalar()
    return int(result) if result is not None else None


def _prepare_item(item: Any, now: datetime) -> PreparedAction:
    if isinstance(item, dict):
        unknown = set(item) - {"action_type", "payload", "idempotency_key", "not_before"}
        if unknown:
            raise InvalidPayload(
                str(item.get("action_type")), [f"unknown fields {sorted(unknown)}"]
            )
        return prepare(
            item.get("action_type"),  # type: ignore[arg-type]
            item.get("payload"),
            item.get("idempotency_key"),
            item.get("not_before"),
            now,
        )
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        key = item[2] if len(item) == 3 else None
        return prepare(item[0], item[1], key, None, now)
    raise InvalidPayload("?", [f"expected (type, payload[, key]) or a dict, got {item!r:.80}"])


# -- AOLAction rows built by hand (the original's way to enqueue) -----------------------------

_HAND_BUILT_DISPATCH = "aol_hand_built_countdown"


def complete_hand_built(action: AOLAction, now: datetime) -> None:
    """Check an ``AOLAction`` added to a session by hand and fill what the original's code
    never set, exactly as enqueue does: a known type, a valid key, the payload validated and
    stored in its checked form, ``not_before_utc`` now, ``max_attempts`` from the type's policy.
    Called at flush (a mapper event) with the database's "now": an error here leaves no row."""
    if not isinstance(action.action_type, str):
        raise InvalidPayload(str(action.action_type), ["action_type: must be a string"])
    spec = registry.get(action.action_type)
    action.idempotency_key = validate_key(action.idempotency_key)
    action.payload_json = validate_payload(spec, action.payload_json)
    check_size(spec, canonical_json(action.payload_json))
    if action.not_before_utc is None:
        action.not_before_utc = now
    elif action.not_before_utc.tzinfo is None or action.not_before_utc.utcoffset() is None:
        raise InvalidSchedule(
            f"not_before_utc {action.not_before_utc.isoformat()} is a naive datetime; give a "
            "timezone (e.g. datetime.now(UTC))"
        )
    if action.max_attempts is None:
        action.max_attempts = spec.retry.max_attempts
    # A READY (or RETRY) row due soon is sent after commit, as an enqueued one is. A PENDING
    # one is left to the sweeper, which makes it READY and sends it when it is due.
    wait = (action.not_before_utc - now).total_seconds()
    if (
        action.status in CLAIMABLE_STATUSES
        and action.queued_at_utc is None
        and wait <= get_settings().dispatch_horizon_seconds
    ):
        action.queued_at_utc = max(now, action.not_before_utc)
        inspect(action).info[_HAND_BUILT_DISPATCH] = max(0.0, wait)


def dispatch_hand_built(session: Session, action: AOLAction) -> None:
    """After the INSERT of a hand-built row: its message goes out when ``session`` commits."""
    countdown = inspect(action).info.pop(_HAND_BUILT_DISPATCH, None)
    if countdown is not None:
        dispatch_after_commit(session, [Dispatch(action.id, action.action_type, countdown)])
