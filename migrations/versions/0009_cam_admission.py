"""Admission: send windows, per-person frequency caps, concurrency slots per key

Revision ID: 0009_cam_admission
Revises: 0008_cam_outcomes
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import aicmo.db

revision: str = "0009_cam_admission"
down_revision: str | None = "0008_cam_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cam_campaigns") as batch:
        batch.add_column(sa.Column("send_window", aicmo.db.JSONType, nullable=True))
        batch.add_column(sa.Column("frequency_caps", aicmo.db.JSONType, nullable=True))
    op.create_table(
        "cam_recipients",
        sa.Column("address", sa.String(length=520), nullable=False),
        sa.Column("created_at_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "cam_contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("address", sa.String(length=520), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("at_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["cam_outreach_messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_cam_contacts_address", "cam_contacts", ["address", "at_utc"])
    op.create_table(
        "aol_slots",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("action_id", sa.BigInteger(), nullable=True),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("taken_at_utc", aicmo.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", "slot"),
    )
    op.create_index(
        "ix_aol_slots_token",
        "aol_slots",
        ["token"],
        postgresql_where=sa.text("token IS NOT NULL"),
        sqlite_where=sa.text("token IS NOT NULL"),
    )
    op.create_table(
        "aol_slot_waiters",
        sa.Column("action_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("since_utc", aicmo.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("action_id"),
    )
    op.create_index("ix_aol_slot_waiters_key", "aol_slot_waiters", ["key", "action_id"])


def downgrade() -> None:
    op.drop_index("ix_aol_slot_waiters_key", table_name="aol_slot_waiters")
    op.drop_table("aol_slot_waiters")
    op.drop_index("ix_aol_slots_token", table_name="aol_slots")
    op.drop_table("aol_slots")
    op.drop_index("ix_cam_contacts_address", table_name="cam_contacts")
    op.drop_table("cam_contacts")
    op.drop_table("cam_recipients")
    with op.batch_alter_table("cam_campaigns") as batch:
        batch.drop_column("frequency_caps")
        batch.drop_column("send_window")
