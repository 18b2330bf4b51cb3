"""Social accounts: social_accounts (credentials encrypted at rest)

Revision ID: 0006_social_accounts
Revises: 0005_web
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import aicmo.db

revision: str = "0006_social_accounts"
down_revision: str | None = "0005_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = aicmo.db.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "social_accounts",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("handle", sa.String(320), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=True),
        sa.Column("base_url", sa.String(500), nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("credentials_version", sa.Integer(), nullable=False),
        sa.Column("access_expires_at_utc", UTC(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("refresh_holder", sa.String(64), nullable=True),
        sa.Column("refresh_lease_until_utc", UTC(), nullable=True),
        sa.Column("last_refreshed_at_utc", UTC(), nullable=True),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.Column("updated_at_utc", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_social_accounts")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["cam_campaigns.id"],
            name=op.f("fk_social_accounts_campaign_id_cam_campaigns"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "platform",
            "handle",
            "campaign_id",
            name=op.f("uq_social_accounts_platform_handle_campaign_id"),
        ),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'AUTH_FAILED', 'DISABLED')",
            name=op.f("ck_social_accounts_status_valid"),
        ),
    )
    op.create_index(
        "ix_social_accounts_platform_campaign_id",
        "social_accounts",
        ["platform", "campaign_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_social_accounts_platform_campaign_id", table_name="social_accounts")
    op.drop_table("social_accounts")
