"""The outcome loop: cam_email_events, cam_sending_brakes; campaign brakes and click tracking;
provider message ids; outcome counts in cam_campaign_metrics

Revision ID: 0008_cam_outcomes
Revises: 0007_cam_sending
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import aicmo.db

revision: str = "0008_cam_outcomes"
down_revision: str | None = "0007_cam_sending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = aicmo.db.UTCDateTime
KINDS = "'delivered', 'bounce_hard', 'bounce_soft', 'complaint', 'unsubscribe', 'open', " + (
    "'click', 'other'"
)
METRIC_COLUMNS = (
    "delivered",
    "bounced_hard",
    "bounced_soft",
    "complained",
    "unsubscribed",
    "opened",
    "clicked",
)


def upgrade() -> None:
    with op.batch_alter_table("cam_campaigns") as batch:
        batch.add_column(
            sa.Column("click_tracking", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("brake_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("braked_at_utc", UTC(), nullable=True))
    with op.batch_alter_table("cam_outreach_messages") as batch:
        batch.add_column(sa.Column("provider_message_id", sa.String(500), nullable=True))
    op.create_index(
        op.f("ix_cam_outreach_messages_external"), "cam_outreach_messages", ["external_id"]
    )
    op.create_index(
        op.f("ix_cam_outreach_messages_provider_id"),
        "cam_outreach_messages",
        ["provider_message_id"],
    )
    with op.batch_alter_table("cam_campaign_metrics") as batch:
        for name in METRIC_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "cam_email_events",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=True),
        sa.Column("recipient", sa.String(320), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("detail", JSONType, nullable=True),
        sa.Column("occurred_at_utc", UTC(), nullable=False),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["cam_outreach_messages.id"],
            name=op.f("fk_cam_email_events_message_id_cam_outreach_messages"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["cam_campaigns.id"],
            name=op.f("fk_cam_email_events_campaign_id_cam_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_email_events")),
        sa.UniqueConstraint(
            "provider", "event_id", name=op.f("uq_cam_email_events_provider_event_id")
        ),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f("ck_cam_email_events_kind_valid")),
    )
    op.create_index(
        op.f("ix_cam_email_events_campaign"),
        "cam_email_events",
        ["campaign_id", "kind", "created_at_utc"],
    )
    op.create_index(op.f("ix_cam_email_events_message"), "cam_email_events", ["message_id", "kind"])
    op.create_index(
        op.f("ix_cam_email_events_recipient"),
        "cam_email_events",
        ["recipient", "kind", "created_at_utc"],
    )
    op.create_table(
        "cam_sending_brakes",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("braked_at_utc", UTC(), nullable=False),
        sa.Column("released_at_utc", UTC(), nullable=True),
        sa.Column("released_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_sending_brakes")),
        sa.UniqueConstraint("domain", name=op.f("uq_cam_sending_brakes_domain")),
    )


def downgrade() -> None:
    op.drop_table("cam_sending_brakes")
    op.drop_table("cam_email_events")
    with op.batch_alter_table("cam_campaign_metrics") as batch:
        for name in METRIC_COLUMNS:
            batch.drop_column(name)
    op.drop_index(op.f("ix_cam_outreach_messages_provider_id"), "cam_outreach_messages")
    op.drop_index(op.f("ix_cam_outreach_messages_external"), "cam_outreach_messages")
    with op.batch_alter_table("cam_outreach_messages") as batch:
        batch.drop_column("provider_message_id")
    with op.batch_alter_table("cam_campaigns") as batch:
        batch.drop_column("braked_at_utc")
        batch.drop_column("brake_reason")
        batch.drop_column("click_tracking")
