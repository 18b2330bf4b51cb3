"""cam_outreach_messages.sending_at_utc: the daily-limit reservation of a publish in progress

Revision ID: 0007_cam_sending
Revises: 0006_social_accounts
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import aicmo.db

revision: str = "0007_cam_sending"
down_revision: str | None = "0006_social_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cam_outreach_messages") as batch:
        batch.add_column(sa.Column("sending_at_utc", aicmo.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cam_outreach_messages") as batch:
        batch.drop_column("sending_at_utc")
