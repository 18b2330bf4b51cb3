"""The broker priority an action's messages go at, kept on its row for every later message

Revision ID: 0011_action_priority
Revises: 0010_log_partitions
Create Date: 2026-12-02

A nullable column with no default: on PostgreSQL adding it rewrites nothing and takes the
table lock only for a moment, so workers may keep running (unlike 0010).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_action_priority"
down_revision: str | None = "0010_log_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("aol_actions") as batch:
        batch.add_column(sa.Column("priority", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("aol_actions") as batch:
        batch.drop_column("priority")
