"""The web service: web_users, web_api_tokens, and the indexes of the console's pages

Revision ID: 0005_web
Revises: 0004_original_log_columns
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import aicmo.db

revision: str = "0005_web"
down_revision: str | None = "0004_original_log_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = aicmo.db.UTCDateTime
CAMPAIGN_INDEX = {
    "postgresql": "CREATE INDEX ix_aol_actions_campaign ON aol_actions "
    "(((payload_json ->> 'campaign_id')), id)",
    "sqlite": "CREATE INDEX ix_aol_actions_campaign ON aol_actions "
    "(json_extract(payload_json, '$.campaign_id'), id)",
}


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lockouts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until_utc", UTC(), nullable=True),
        sa.Column("last_login_at_utc", UTC(), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.Column("updated_at_utc", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_users")),
        sa.UniqueConstraint("name", name=op.f("uq_web_users_name")),
    )
    op.create_table(
        "web_api_tokens",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at_utc", UTC(), nullable=False),
        sa.Column("last_used_at_utc", UTC(), nullable=True),
        sa.Column("revoked_at_utc", UTC(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["web_users.id"],
            name=op.f("fk_web_api_tokens_user_id_web_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_api_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_web_api_tokens_token_sha256")),
    )
    op.create_index(op.f("ix_web_api_tokens_user_id"), "web_api_tokens", ["user_id"])
    op.create_index("ix_aol_actions_status_id", "aol_actions", ["status", "id"])
    op.create_index("ix_aol_actions_type_id", "aol_actions", ["action_type", "id"])
    # The console's campaign filter reads the payload: an expression index on each backend
    # (not in the models: an expression differs by dialect; autogenerate skips these).
    op.execute(CAMPAIGN_INDEX[op.get_bind().dialect.name])


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_aol_actions_campaign")
    op.drop_index("ix_aol_actions_type_id", table_name="aol_actions")
    op.drop_index("ix_aol_actions_status_id", table_name="aol_actions")
    op.drop_index(op.f("ix_web_api_tokens_user_id"), table_name="web_api_tokens")
    op.drop_table("web_api_tokens")
    op.drop_table("web_users")
