"""The AOL tables: actions (the source of truth), their execution log, and control flags."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    case,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, synonym, validates
from sqlalchemy.types import TypeDecorator, TypeEngine

from aicmo.db import Base, JSONType, NaiveDatetimeError, UTCDateTime, utcnow
from aicmo.orchestration.errors import UnknownActionType
from aicmo.orchestration.registry import registry
from aicmo.orchestration.retry import RetryPolicy
from aicmo.orchestration.status import ActionStatus, LogEvent

# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in ActionStatus)
_WAITING = "status IN ('PENDING', 'READY', 'RETRY')"
_QUEUED = "status IN ('READY', 'RETRY')"
_TERMINAL = "status IN ('SUCCESS', 'FAILED', 'DLQ', 'CANCELLED')"


def _partial(where: str) -> dict[str, Any]:
    return {"postgresql_where": text(where), "sqlite_where": text(where)}


# -- what the original AICMO's code writes: payloads as JSON text, only its own columns -------


def decode_payload(value: Any) -> Any:
    """The object a payload stands for. The original stored ``payload_json`` as JSON text (and
    NULL for an empty payload); code written against it still hands over text."""
    if value is None:
        return {}
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"payload_json is not valid JSON text: {exc}") from None
    if not isinstance(decoded, dict):
        raise ValueError(
            f"payload_json must encode a JSON object, got {type(decoded).__name__}: {value:.80}"
        )
    return decoded


class PayloadJSON(TypeDecorator[Any]):
    """JSONB on PostgreSQL, JSON elsewhere; JSON text given as a value is stored as the object
    it encodes (an ``insert(AOLAction).values(payload_json='{..}')`` in the original's style).
    The worker's hot path binds its own parameters and never goes through here."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or isinstance(value, str | bytes | bytearray):
            return decode_payload(value)
        return value


def default_max_attempts(action_type: str | None) -> int:
    """The type's retry policy, or the default one for a type this process does not know."""
    try:
        return registry.get(action_type or "").retry.max_attempts
    except UnknownActionType:
        return RetryPolicy.from_settings().max_attempts


def _max_attempts_default(context: Any) -> int:
    return default_max_attempts(context.get_current_parameters().get("action_type"))


class AOLAction(Base):
    __tablename__ = "aol_actions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    action_type: Mapped[str] = mapped_column(String(64))
    payload_json: Mapped[dict[str, Any]] = mapped_column(PayloadJSON)
    status: Mapped[str] = mapped_column(String(16))
    # When the action is due. Never NULL: "now" at enqueue when the caller gives no time.
    not_before_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=_max_attempts_default)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Unique per claim ("host/pid/nonce"): the fencing token a worker must still hold to
    # write the outcome, so a run whose lease expired can never overwrite the next one.
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the last message for this action was due to reach a worker (publish time plus
    # countdown). NULL means "no message sent yet": the sweeper sends it when it is due.
    queued_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The broker priority of every message sent for this action (its first, its retries, the
    # sweeper's resends, a wake-up, a replay), so a bulk publish stays behind other work
    # (aicmo.orchestration.dispatch.BULK_PRIORITY). NULL: 0, the top.
    priority: Mapped[int | None] = mapped_column(SmallInteger)
    result_json: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    logs: Mapped[list[AOLExecutionLog]] = relationship(
        back_populates="action",
        order_by="AOLExecutionLog.id",
        cascade="all, delete-orphan",
        # The ORM deletes an action's log rows itself: PostgreSQL's partitioned log has no
        # foreign key to cascade (aicmo/orchestration/partitions.py).
        passive_deletes=False,
    )

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status_valid"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts_valid"),
        # The sweeper's three questions, each answered from a small partial index, so a
        # sweep costs O(due rows) however many finished actions the table holds:
        # which waiting actions have no message yet and are due (soon)?
        Index(
            "ix_aol_actions_unqueued_due",
            "not_before_utc",
            **_partial(f"queued_at_utc IS NULL AND {_WAITING}"),
        ),
        # which queued actions' messages should have arrived long ago (lost)?
        Index("ix_aol_actions_queued_at", "queued_at_utc", **_partial(_QUEUED)),
        # which running actions' leases have expired?
        Index("ix_aol_actions_lease", "lease_expires_at_utc", **_partial("status = 'RUNNING'")),
        # purge of old finished actions
        Index("ix_aol_actions_finished", "finished_at_utc", **_partial(_TERMINAL)),
        Index("ix_aol_actions_status_type", "status", "action_type"),
        # The console's and API's keyset pages (newest first) filtered by status or type.
        Index("ix_aol_actions_status_id", "status", "id"),
        Index("ix_aol_actions_type_id", "action_type", "id"),
        # The campaign filter (aicmo.ops.actions); on SQLite migration 0005 makes the same
        # index over json_extract (autogenerate cannot compare SQLite expression indexes).
        Index("ix_aol_actions_campaign", text("(payload_json ->> 'campaign_id')"), "id").ddl_if(
            dialect="postgresql"
        ),
    )

    @validates("payload_json")
    def _decode_payload(self, _key: str, value: Any) -> Any:
        return decode_payload(value)

    @property
    def status_enum(self) -> ActionStatus:
        return ActionStatus(self.status)

    def __repr__(self) -> str:
        return (
            f"<AOLAction {self.id} {self.action_type} {self.status} "
            f"attempts={self.attempts}/{self.max_attempts} key={self.idempotency_key!r}>"
        )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The level an engine event reads as through the original's ``level`` (INFO otherwise).
EVENT_LEVELS = {
    LogEvent.FAILED.value: "ERROR",
    LogEvent.DEAD_LETTERED.value: "ERROR",
    LogEvent.LEASE_LOST.value: "ERROR",
    LogEvent.LEASE_EXPIRED.value: "ERROR",
    LogEvent.RETRY_SCHEDULED.value: "WARNING",
    LogEvent.SKIPPED_DUPLICATE.value: "WARNING",
}


class AOLExecutionLog(Base):
    __tablename__ = "aol_execution_logs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("aol_actions.id", ondelete="CASCADE"), index=True
    )
    # A row the original's code writes (level + message) has no engine event: NOTE.
    event: Mapped[str] = mapped_column(String(32), default=LogEvent.NOTE.value)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    worker: Mapped[str | None] = mapped_column(String(128))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    artifact_ref: Mapped[str | None] = mapped_column(Text)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    details_json: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The original's columns. Engine rows leave them NULL (the hot path writes no more than it
    # needs); reading ``level``/``message`` gives a value derived from the event for those.
    stored_level: Mapped[str | None] = mapped_column("level", String(16))
    stored_message: Mapped[str | None] = mapped_column("message", Text)

    action: Mapped[AOLAction] = relationship(back_populates="logs")

    # The original called the row's time ts_utc.
    ts_utc = synonym("created_at_utc")

    @validates("created_at_utc")
    def _aware(self, _key: str, value: datetime | None) -> datetime | None:
        # The original wrote ts_utc=datetime.utcnow(): refused here, where the mistake is.
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise NaiveDatetimeError(
                f"ts_utc {value.isoformat()} is a naive datetime; give a timezone "
                "(e.g. datetime.now(UTC))"
            )
        return value

    @hybrid_property
    def level(self) -> str:
        if self.stored_level is not None:
            return self.stored_level
        return EVENT_LEVELS.get(self.event, "INFO")

    @level.inplace.setter
    def _level_setter(self, value: str | None) -> None:
        if value is not None:
            if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
                raise ValueError(f"level must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
            value = value.upper()
        self.stored_level = value

    @level.inplace.expression
    @classmethod
    def _level_expression(cls) -> ColumnElement[str]:
        derived = case(EVENT_LEVELS, value=cls.event, else_="INFO")
        return func.coalesce(cls.stored_level, derived)

    @hybrid_property
    def message(self) -> str:
        """What the row says: the message written, else the error, else the event."""
        return self.stored_message or self.error or self.event

    @message.inplace.setter
    def _message_setter(self, value: str | None) -> None:
        self.stored_message = value

    @message.inplace.expression
    @classmethod
    def _message_expression(cls) -> ColumnElement[str]:
        return func.coalesce(cls.stored_message, cls.error, cls.event)

    @property
    def event_enum(self) -> LogEvent:
        return LogEvent(self.event)

    def __repr__(self) -> str:
        return f"<AOLExecutionLog {self.id} action={self.action_id} {self.event}>"


class AOLControl(Base):
    """Operator switches, e.g. ``pause`` (all types) or ``pause:SEND_EMAIL`` (one type)."""

    __tablename__ = "aol_control"

    name: Mapped[str] = mapped_column(String(96), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(128))
    updated_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AOLSlot(Base):
    """One of the N run slots of a concurrency key (``SEND_EMAIL:account=7``, slot 1..N).

    A claim of a type with a concurrency key takes a free slot in the claim statement itself
    (``FOR UPDATE SKIP LOCKED``): N slot rows, so never more than N holders. See
    aicmo.orchestration.concurrency."""

    __tablename__ = "aol_slots"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int | None] = mapped_column(BigInteger)
    token: Mapped[str | None] = mapped_column(String(64))
    taken_at_utc: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(
            "ix_aol_slots_token",
            "token",
            postgresql_where=text("token IS NOT NULL"),
            sqlite_where=text("token IS NOT NULL"),
        ),
    )


class AOLSlotWaiter(Base):
    """An action parked (PENDING) until a slot of its key frees: woken oldest first."""

    __tablename__ = "aol_slot_waiters"

    action_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    since_utc: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_aol_slot_waiters_key", "key", "action_id"),)


# An AOLAction added to a session by hand (the original's way to enqueue) is checked and
# completed as enqueue does it; the engine itself never inserts through the ORM.
@event.listens_for(AOLAction, "before_insert")
def _check_hand_built(_mapper: Any, connection: Any, action: AOLAction) -> None:
    from aicmo.db import db_clock
    from aicmo.orchestration.queue import complete_hand_built

    complete_hand_built(action, db_clock(connection))


@event.listens_for(AOLAction, "after_insert")
def _dispatch_hand_built(_mapper: Any, _connection: Any, action: AOLAction) -> None:
    from sqlalchemy.orm import object_session

    from aicmo.orchestration.queue import dispatch_hand_built

    session = object_session(action)
    if isinstance(session, Session):
        dispatch_hand_built(session, action)
