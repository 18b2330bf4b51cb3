"""AOL core: aol_actions, aol_execution_logs, aol_control

Revision ID: 0001_aol_core
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import aicmo.db

revision: str = "0001_aol_core"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STATUSES = "'PENDING', 'READY', 'RUNNING', 'RETRY', 'SUCCESS', 'FAILED', 'DLQ', 'CANCELLED'"


def partial(where: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(where), "sqlite_where": sa.text(where)}


def upgrade() -> None:
    op.create_table(
        "aol_actions",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("action_type", sa.String(64), nullable=False),
        sa.Column("payload_json", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_before_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.Column("started_at_utc", aicmo.db.UTCDateTime(), nullable=True),
        sa.Column("finished_at_utc", aicmo.db.UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("lease_expires_at_utc", aicmo.db.UTCDateTime(), nullable=True),
        sa.Column("queued_at_utc", aicmo.db.UTCDateTime(), nullable=True),
        sa.Column("result_json", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aol_actions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_aol_actions_idempotency_key")),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_aol_actions_status_valid")),
        sa.CheckConstraint(
            "attempts >= 0 AND max_attempts >= 1", name=op.f("ck_aol_actions_attempts_valid")
        ),
    )
    op.create_index(
        "ix_aol_actions_unqueued_due",
        "aol_actions",
        ["not_before_utc"],
        **partial("queued_at_utc IS NULL AND status IN ('PENDING', 'READY', 'RETRY')"),
    )
    op.create_index(
        "ix_aol_actions_queued_at",
        "aol_actions",
        ["queued_at_utc"],
        **partial("status IN ('READY', 'RETRY')"),
    )
    op.create_index(
        "ix_aol_actions_lease",
        "aol_actions",
        ["lease_expires_at_utc"],
        **partial("status = 'RUNNING'"),
    )
    op.create_index(
        "ix_aol_actions_finished",
        "aol_actions",
        ["finished_at_utc"],
        **partial("status IN ('SUCCESS', 'FAILED', 'DLQ', 'CANCELLED')"),
    )
    op.create_index("ix_aol_actions_status_type", "aol_actions", ["status", "action_type"])

    op.create_table(
        "aol_execution_logs",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("action_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("artifact_ref", sa.Text(), nullable=True),
        sa.Column("artifact_sha256", sa.String(64), nullable=True),
        sa.Column("details_json", JSONType, nullable=True),
        sa.Column("created_at_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["aol_actions.id"],
            name=op.f("fk_aol_execution_logs_action_id_aol_actions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aol_execution_logs")),
    )
    op.create_index(op.f("ix_aol_execution_logs_action_id"), "aol_execution_logs", ["action_id"])

    op.create_table(
        "aol_control",
        sa.Column("name", sa.String(96), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=True),
        sa.Column("updated_at_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_aol_control")),
    )


def downgrade() -> None:
    op.drop_table("aol_control")
    op.drop_index(op.f("ix_aol_execution_logs_action_id"), table_name="aol_execution_logs")
    op.drop_table("aol_execution_logs")
    for name in (
        "ix_aol_actions_status_type",
        "ix_aol_actions_finished",
        "ix_aol_actions_lease",
        "ix_aol_actions_queued_at",
        "ix_aol_actions_unqueued_due",
    ):
        op.drop_index(name, table_name="aol_actions")
    op.drop_table("aol_actions")
