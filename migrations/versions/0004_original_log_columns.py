"""The original AICMO's execution-log columns: level and message

Code written against the original writes ``AOLExecutionLog(action_id=.., level="INFO",
message="..")``; its ``ts_utc`` is a synonym of ``created_at_utc`` and needs no column.

Revision ID: 0004_original_log_columns
Revises: 0002_campaigns
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_original_log_columns"
down_revision: str | None = "0002_campaigns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("aol_execution_logs") as batch:
        batch.add_column(sa.Column("level", sa.String(16), nullable=True))
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("aol_execution_logs") as batch:
        batch.drop_column("message")
        batch.drop_column("level")
