"""The migrations are the only way the schema is made: they must agree with the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from aicmo.db import create_db_engine
from aicmo.migrate import downgrade, upgrade
from aicmo.models import metadata
from aicmo.orchestration import partitions


def _differences(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    # Test-only tables (the effect ledger) are not part of the schema, nor
                    # are the log's monthly partitions (made at run time).
                    "include_name": lambda name, kind, _: (
                        not (kind == "table" and (name or "").startswith("test_"))
                        and partitions.compare_include_name(name, kind)
                    ),
                    # PostgreSQL's partitioned log has no foreign key (partitions.py says why).
                    "include_object": partitions.compare_include_object(conn.dialect.name),
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_postgresql_schema_from_migrations_matches_the_models(database_url: str) -> None:
    assert _differences(database_url) == []


def test_sqlite_schema_from_migrations_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade(url)
    assert _differences(url) == []
    engine = create_db_engine(url)
    with engine.connect() as conn:
        # WAL is set once, by the migration, so workers never race to switch it.
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url)
    downgrade(url, "base")
    engine = create_db_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    upgrade(url)
    assert _differences(url) == []


@pytest.mark.parametrize(
    "index", ["ix_aol_actions_unqueued_due", "ix_aol_actions_queued_at", "ix_aol_actions_lease"]
)
def test_sweeper_indexes_are_partial_on_postgresql(database_url: str, index: str) -> None:
    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        definition = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": index}
        ).scalar()
    engine.dispose()
    assert definition is not None and " WHERE " in definition
