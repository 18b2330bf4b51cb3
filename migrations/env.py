"""Alembic environment: the URL comes from aicmo's settings unless the caller sets one."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from aicmo.config import get_settings
from aicmo.db import create_db_engine
from aicmo.models import metadata
from aicmo.orchestration import partitions

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=database_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                include_name=lambda name, kind, _parents: partitions.compare_include_name(
                    name, kind
                ),
                include_object=partitions.compare_include_object(connection.dialect.name),
            )
            with context.begin_transaction():
                context.run_migrations()
        if engine.dialect.name == "sqlite":
            # WAL once, here, when the schema is made: switching it while a worker holds a
            # connection fails with "database is locked". The raw connection is in
            # autocommit mode, as the PRAGMA requires.
            with engine.connect() as connection:
                connection.connection.driver_connection.execute("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
