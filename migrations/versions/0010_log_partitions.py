"""PostgreSQL: aol_execution_logs partitioned by month on created_at_utc

The table is rebuilt as ``PARTITION BY RANGE (created_at_utc)``: primary key (id,
created_at_utc) (a partitioned table's keys must hold the partition key; ids stay unique, from
the same sequence), the action_id index on every partition, a DEFAULT partition so that an
insert never fails, one partition per month of the existing rows (at most 12 months back;
older rows go to DEFAULT) up to next month, and the rows copied over. The foreign key to
aol_actions is not carried over (see aicmo/orchestration/partitions.py for why). The copy holds
an ACCESS EXCLUSIVE lock on the log for its duration: run it with the workers stopped.

SQLite (the embedded default) keeps its plain table: nothing changes there.
Downgrade rebuilds the plain table with its foreign key (log rows of deleted actions dropped).

Revision ID: 0010_log_partitions
Revises: 0009_cam_admission
Create Date: 2026-12-01
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import op

revision: str = "0010_log_partitions"
down_revision: str | None = "0009_cam_admission"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "aol_execution_logs"
MONTHS_BACK = 12


def _month(moment: datetime, shift: int = 0) -> datetime:
    index = moment.year * 12 + moment.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_plain")
    op.execute(f"ALTER TABLE {TABLE}_plain RENAME CONSTRAINT pk_{TABLE} TO pk_{TABLE}_plain")
    op.execute(f"ALTER INDEX ix_{TABLE}_action_id RENAME TO ix_{TABLE}_plain_action_id")
    op.execute(
        f"CREATE TABLE {TABLE} (LIKE {TABLE}_plain INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (created_at_utc)"
    )
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT pk_{TABLE} PRIMARY KEY (id, created_at_utc)")
    op.execute(f"CREATE INDEX ix_{TABLE}_action_id ON {TABLE} (action_id)")
    op.execute(f"ALTER SEQUENCE {TABLE}_id_seq OWNED BY {TABLE}.id")
    op.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
    now = bind.exec_driver_sql("SELECT now()").scalar_one()
    oldest = bind.exec_driver_sql(f"SELECT min(created_at_utc) FROM {TABLE}_plain").scalar()
    current = _month(now)
    month = max(_month(oldest), _month(now, -MONTHS_BACK)) if oldest else current
    while month <= _month(now, 1):
        upper = _month(month, 1)
        op.execute(
            f"CREATE TABLE {TABLE}_{month:%Y%m} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{upper.isoformat()}')"
        )
        month = upper
    op.execute(f"INSERT INTO {TABLE} SELECT * FROM {TABLE}_plain")
    op.execute(f"DROP TABLE {TABLE}_plain")
    op.execute(f"ANALYZE {TABLE}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    op.execute(f"CREATE TABLE {TABLE}_plain (LIKE {TABLE} INCLUDING DEFAULTS)")
    # The foreign key comes back: rows whose action is gone cannot come with it.
    op.execute(
        f"INSERT INTO {TABLE}_plain SELECT l.* FROM {TABLE} l "
        "WHERE EXISTS (SELECT 1 FROM aol_actions a WHERE a.id = l.action_id)"
    )
    op.execute(f"ALTER SEQUENCE {TABLE}_id_seq OWNED BY {TABLE}_plain.id")
    op.execute(f"DROP TABLE {TABLE}")  # with its partitions
    op.execute(f"ALTER TABLE {TABLE}_plain RENAME TO {TABLE}")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT pk_{TABLE} PRIMARY KEY (id)")
    op.execute(f"CREATE INDEX ix_{TABLE}_action_id ON {TABLE} (action_id)")
    op.execute(
        f"ALTER TABLE {TABLE} ADD CONSTRAINT fk_{TABLE}_action_id_aol_actions "
        "FOREIGN KEY (action_id) REFERENCES aol_actions (id) ON DELETE CASCADE"
    )
