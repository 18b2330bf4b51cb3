"""Campaigns: cam_campaigns, cam_leads, cam_outreach_messages, cam_orchestrator_runs,
cam_campaign_metrics, cam_suppressions

Revision ID: 0002_campaigns
Revises: 0001_aol_core
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import aicmo.db

revision: str = "0002_campaigns"
down_revision: str | None = "0001_aol_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = aicmo.db.UTCDateTime

DUE_LEADS_WHERE = "status IN ('NEW', 'CONTACTED') AND next_action_at_utc IS NOT NULL"
LIVE_RUN_WHERE = "status = 'RUNNING'"


def partial(where: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(where), "sqlite_where": sa.text(where)}


def upgrade() -> None:
    op.create_table(
        "cam_campaigns",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("tick_every_minutes", sa.Integer(), nullable=True),
        sa.Column("tick_daily_at", sa.String(5), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("daily_send_limit", sa.Integer(), nullable=False),
        sa.Column("kill_switch", sa.Boolean(), nullable=False),
        sa.Column("channels", JSONType, nullable=False),
        sa.Column("requires_approval", sa.Boolean(), nullable=False),
        sa.Column("steps", JSONType, nullable=False),
        sa.Column("max_steps", sa.Integer(), nullable=False),
        sa.Column("from_address", sa.String(320), nullable=True),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.Column("updated_at_utc", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_campaigns")),
        sa.CheckConstraint(
            "status IN ('DRAFT', 'ACTIVE', 'PAUSED', 'STOPPED')",
            name=op.f("ck_cam_campaigns_status_valid"),
        ),
        sa.CheckConstraint("mode IN ('proof', 'live')", name=op.f("ck_cam_campaigns_mode_valid")),
        sa.CheckConstraint(
            "(tick_every_minutes IS NULL) <> (tick_daily_at IS NULL)",
            name=op.f("ck_cam_campaigns_one_cadence"),
        ),
        sa.CheckConstraint(
            "batch_size >= 1 AND daily_send_limit >= 0 AND max_steps >= 1",
            name=op.f("ck_cam_campaigns_limits_valid"),
        ),
    )
    op.create_index("ix_cam_campaigns_status", "cam_campaigns", ["status"])

    op.create_table(
        "cam_leads",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("identity_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("email_domain", sa.String(255), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("linkedin_url", sa.String(500), nullable=True),
        sa.Column("first_name", sa.String(100), nullable=True),
        sa.Column("last_name", sa.String(100), nullable=True),
        sa.Column("company", sa.String(200), nullable=True),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("attributes", JSONType, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consent", sa.String(16), nullable=False),
        sa.Column("requires_human_review", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("next_action_at_utc", UTC(), nullable=True),
        sa.Column("last_contacted_at_utc", UTC(), nullable=True),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.Column("updated_at_utc", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["cam_campaigns.id"],
            name=op.f("fk_cam_leads_campaign_id_cam_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_leads")),
        sa.UniqueConstraint(
            "campaign_id", "identity_hash", name=op.f("uq_cam_leads_campaign_id_identity_hash")
        ),
        sa.CheckConstraint(
            "status IN ('NEW', 'CONTACTED', 'REPLIED', 'CONVERTED', 'LOST')",
            name=op.f("ck_cam_leads_status_valid"),
        ),
        sa.CheckConstraint(
            "consent IN ('UNKNOWN', 'CONSENTED', 'DNC')", name=op.f("ck_cam_leads_consent_valid")
        ),
        sa.CheckConstraint(
            "email IS NOT NULL OR phone IS NOT NULL OR linkedin_url IS NOT NULL",
            name=op.f("ck_cam_leads_has_identity"),
        ),
    )
    op.create_index(
        "ix_cam_leads_due",
        "cam_leads",
        ["campaign_id", "next_action_at_utc"],
        **partial(DUE_LEADS_WHERE),
    )
    op.create_index("ix_cam_leads_email", "cam_leads", ["campaign_id", "email"])
    op.create_index("ix_cam_leads_phone", "cam_leads", ["campaign_id", "phone"])
    op.create_index("ix_cam_leads_linkedin", "cam_leads", ["campaign_id", "linkedin_url"])
    op.create_index("ix_cam_leads_created", "cam_leads", ["campaign_id", "created_at_utc"])

    op.create_table(
        "cam_outreach_messages",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(998), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("generated_by", sa.String(16), nullable=False),
        sa.Column("publish_status", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("approved_at_utc", UTC(), nullable=True),
        sa.Column("rejected_at_utc", UTC(), nullable=True),
        sa.Column("publish_action_id", sa.BigInteger(), nullable=True),
        sa.Column("queued_at_utc", UTC(), nullable=True),
        sa.Column("external_id", sa.String(500), nullable=True),
        sa.Column("published_at_utc", UTC(), nullable=True),
        sa.Column("failed_at_utc", UTC(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.Column("updated_at_utc", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["cam_campaigns.id"],
            name=op.f("fk_cam_outreach_messages_campaign_id_cam_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["cam_leads.id"],
            name=op.f("fk_cam_outreach_messages_lead_id_cam_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_outreach_messages")),
        sa.UniqueConstraint("lead_id", "step", name=op.f("uq_cam_outreach_messages_lead_id_step")),
        sa.CheckConstraint(
            "publish_status IN ('DRAFT', 'APPROVED', 'REJECTED', 'QUEUED', 'PUBLISHED', 'FAILED')",
            name=op.f("ck_cam_outreach_messages_status_valid"),
        ),
    )
    op.create_index(
        "ix_cam_outreach_messages_status",
        "cam_outreach_messages",
        ["campaign_id", "publish_status"],
    )
    op.create_index(
        "ix_cam_outreach_messages_published",
        "cam_outreach_messages",
        ["campaign_id", "published_at_utc"],
    )
    op.create_index(
        "ix_cam_outreach_messages_created",
        "cam_outreach_messages",
        ["campaign_id", "created_at_utc"],
    )

    op.create_table(
        "cam_orchestrator_runs",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("action_id", sa.BigInteger(), nullable=True),
        sa.Column("slot_utc", UTC(), nullable=True),
        sa.Column("started_at_utc", UTC(), nullable=False),
        sa.Column("lease_expires_at_utc", UTC(), nullable=False),
        sa.Column("finished_at_utc", UTC(), nullable=True),
        sa.Column("takeovers", sa.Integer(), nullable=False),
        sa.Column("leads_considered", sa.Integer(), nullable=False),
        sa.Column("messages_drafted", sa.Integer(), nullable=False),
        sa.Column("messages_queued", sa.Integer(), nullable=False),
        sa.Column("leads_lost", sa.Integer(), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("details_json", JSONType, nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["cam_campaigns.id"],
            name=op.f("fk_cam_orchestrator_runs_campaign_id_cam_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_orchestrator_runs")),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'DONE', 'STOPPED', 'FAILED')",
            name=op.f("ck_cam_orchestrator_runs_status_valid"),
        ),
    )
    op.create_index(
        "uq_cam_orchestrator_runs_live",
        "cam_orchestrator_runs",
        ["campaign_id"],
        unique=True,
        **partial(LIVE_RUN_WHERE),
    )
    op.create_index(
        "ix_cam_orchestrator_runs_campaign",
        "cam_orchestrator_runs",
        ["campaign_id", "started_at_utc"],
    )

    op.create_table(
        "cam_campaign_metrics",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("metric_date", sa.Date(), nullable=False),
        sa.Column("leads_captured", sa.Integer(), nullable=False),
        sa.Column("messages_drafted", sa.Integer(), nullable=False),
        sa.Column("messages_approved", sa.Integer(), nullable=False),
        sa.Column("messages_rejected", sa.Integer(), nullable=False),
        sa.Column("messages_published", sa.Integer(), nullable=False),
        sa.Column("messages_failed", sa.Integer(), nullable=False),
        sa.Column("by_channel", JSONType, nullable=False),
        sa.Column("external", JSONType, nullable=False),
        sa.Column("action_id", sa.BigInteger(), nullable=True),
        sa.Column("collected_at_utc", UTC(), nullable=False),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["cam_campaigns.id"],
            name=op.f("fk_cam_campaign_metrics_campaign_id_cam_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_campaign_metrics")),
        sa.UniqueConstraint(
            "campaign_id",
            "metric_date",
            name=op.f("uq_cam_campaign_metrics_campaign_id_metric_date"),
        ),
    )

    op.create_table(
        "cam_suppressions",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cam_suppressions")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_cam_suppressions_kind_value")),
        sa.CheckConstraint(
            "kind IN ('email', 'domain')", name=op.f("ck_cam_suppressions_kind_valid")
        ),
    )


def downgrade() -> None:
    op.drop_table("cam_suppressions")
    op.drop_table("cam_campaign_metrics")
    op.drop_index("ix_cam_orchestrator_runs_campaign", table_name="cam_orchestrator_runs")
    op.drop_index("uq_cam_orchestrator_runs_live", table_name="cam_orchestrator_runs")
    op.drop_table("cam_orchestrator_runs")
    for name in (
        "ix_cam_outreach_messages_created",
        "ix_cam_outreach_messages_published",
        "ix_cam_outreach_messages_status",
    ):
        op.drop_index(name, table_name="cam_outreach_messages")
    op.drop_table("cam_outreach_messages")
    for name in (
        "ix_cam_leads_created",
        "ix_cam_leads_linkedin",
        "ix_cam_leads_phone",
        "ix_cam_leads_email",
        "ix_cam_leads_due",
    ):
        op.drop_index(name, table_name="cam_leads")
    op.drop_table("cam_leads")
    op.drop_index("ix_cam_campaigns_status", table_name="cam_campaigns")
    op.drop_table("cam_campaigns")
