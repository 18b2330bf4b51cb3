"""The AOL tables: actions (the source of truth), their execution log, and control flags."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aicmo.db import Base, JSONType, UTCDateTime, utcnow
from aicmo.orchestration.status import ActionStatus, LogEvent

# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in ActionStatus)
_WAITING = "status IN ('PENDING', 'READY', 'RETRY')"
_QUEUED = "status IN ('READY', 'RETRY')"
_TERMINAL = "status IN ('SUCCESS', 'FAILED', 'DLQ', 'CANCELLED')"


def _partial(where: str) -> dict[str, Any]:
    return {"postgresql_where": text(where), "sqlite_where": text(where)}


class AOLAction(Base):
    __tablename__ = "aol_actions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    action_type: Mapped[str] = mapped_column(String(64))
    payload_json: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    # When the action is due. Never NULL: "now" at enqueue when the caller gives no time.
    not_before_utc: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
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
    result_json: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    logs: Mapped[list[AOLExecutionLog]] = relationship(
        back_populates="action",
        order_by="AOLExecutionLog.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
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

    @property
    def status_enum(self) -> ActionStatus:
        return ActionStatus(self.status)

    def __repr__(self) -> str:
        return (
            f"<AOLAction {self.id} {self.action_type} {self.status} "
            f"attempts={self.attempts}/{self.max_attempts} key={self.idempotency_key!r}>"
        )


class AOLExecutionLog(Base):
    __tablename__ = "aol_execution_logs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("aol_actions.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    worker: Mapped[str | None] = mapped_column(String(128))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    artifact_ref: Mapped[str | None] = mapped_column(Text)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    details_json: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at_utc: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    action: Mapped[AOLAction] = relationship(back_populates="logs")

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
