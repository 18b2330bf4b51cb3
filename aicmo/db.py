"""Engine, sessions and the column types every model shares.

One engine per (URL, process): a forked Celery child must never reuse its parent's
connections, so the cache is keyed by pid as well as by URL.

The ORM (``Base``, sessions) is imported on first use (aicmo.orm_base): the worker's engine
runs on SQLAlchemy Core and psycopg, and a pool child that only runs handlers which never
touch ``ctx.session`` never loads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Connection, DateTime, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator

from aicmo.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from aicmo.orm_base import Base  # noqa: F401  (typing of `from aicmo.db import Base`)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000  # the default of AICMO_SQLITE_BUSY_TIMEOUT_SECONDS


def __getattr__(name: str) -> Any:
    # ``from aicmo.db import Base`` (every model module) loads the ORM then, not before.
    if name == "Base":
        from aicmo.orm_base import Base

        return Base
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_session(bind: Engine | Connection, **options: Any) -> Session:
    """An ORM session on ``bind`` (the ORM is imported here, on first use)."""
    from sqlalchemy.orm import Session

    return Session(bind, **options)


def utcnow() -> datetime:
    return datetime.now(UTC)


class NaiveDatetimeError(ValueError):
    """A datetime without a timezone reached the database layer."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text in a fixed format (so
    string comparison is time comparison) and the zone is put back on the way out. A naive
    value is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetimeError(f"naive datetime {value.isoformat()} (timezone required)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, rejects \u0000), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

_engines: dict[tuple[str, int], Engine] = {}


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: a deferred transaction that
        # later upgrades to a write lock can fail with "database is locked" at once, without
        # waiting for the busy timeout, when two processes write.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def pooler_connect_args() -> dict[str, Any]:
    """psycopg options for the configured pooler (AICMO_DATABASE_POOLER).

    Behind PgBouncer in transaction pooling, a statement psycopg prepared on one server
    connection is unknown on the next one ("prepared statement _pg3_0 does not exist"), and
    PgBouncer before 1.21 (Debian bookworm ships 1.18) cannot track them: psycopg must
    never prepare (``prepare_threshold=None``). Direct connections keep psycopg's default.
    """
    if get_settings().database_pooler == "transaction":
        return {"prepare_threshold": None}
    return {}


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = int(get_settings().sqlite_busy_timeout_seconds * 1000)
        engine = create_engine(url, connect_args={"timeout": busy_ms / 1000}, hide_parameters=True)
        _configure_sqlite(engine, busy_ms)
        return engine
    return create_engine(
        url,
        connect_args=pooler_connect_args(),
        pool_size=5,
        max_overflow=20,
        pool_timeout=30,
        # Off by default: a ping per checkout costs a round trip per transaction. A restarted
        # PostgreSQL is handled by the pool invalidating every connection on the first error.
        pool_pre_ping=get_settings().database_pre_ping,
        pool_recycle=1800,
        # Bound parameters are customer data (a lead's e-mail): never in an error message.
        hide_parameters=True,
    )


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    key = (url, os.getpid())
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = create_db_engine(url)
    return engine


def dispose_engines() -> None:
    """Drop every cached engine (tests, and a process that changes its settings)."""
    for (_, pid), engine in list(_engines.items()):
        if pid == os.getpid():
            engine.dispose()
    _engines.clear()
    _factories.clear()


_factories: dict[Engine, sessionmaker[Session]] = {}


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker

    engine = get_engine(url)
    factory = _factories.get(engine)
    if factory is None:
        factory = _factories[engine] = sessionmaker(bind=engine, expire_on_commit=False)
    return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    session = session_factory(url)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def db_now(bind: Engine | Any) -> datetime:
    """The database's clock: the one time every process compares against.

    PostgreSQL's ``now()``; SQLite runs in this process, on this host, so its clock is this
    host's (every process sharing an SQLite file shares one host clock).
    """
    dialect = bind.dialect if isinstance(bind, Engine | Connection) else bind.get_bind().dialect
    if dialect.name != "postgresql":
        return utcnow()
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            value = conn.exec_driver_sql("SELECT now()").scalar_one()
    else:
        value = bind.execute(text("SELECT now()")).scalar_one()
    return value.astimezone(UTC)


# How far the database's clock is from this host's, per database, re-measured this often:
# enqueue reads "now" on every call, and a round trip each time would cost more than the insert.
CLOCK_REFRESH_SECONDS = 30.0
_clock_offsets: dict[str, tuple[float, timedelta]] = {}


def db_clock(session: Session | Connection) -> datetime:
    """The database's "now" without a round trip: this host's clock plus the measured offset.

    The offset is measured (``clock_timestamp()``, halfway through the round trip) at most every
    CLOCK_REFRESH_SECONDS, so a host whose clock is minutes off still writes due times and
    queued-at times on the database's clock. SQLite: this host's clock (see :func:`db_now`).
    """
    bind = session if isinstance(session, Connection) else session.get_bind()
    if bind.dialect.name != "postgresql":
        return utcnow()
    return utcnow() + _clock_offset(
        bind.engine, lambda: session.execute(text("SELECT clock_timestamp()")).scalar_one()
    )


def db_clock_psycopg(engine: Engine, driver: Any) -> datetime:
    """:func:`db_clock` on a raw psycopg connection of ``engine`` (in autocommit mode)."""

    def read() -> datetime:
        with driver.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            value: datetime = cursor.fetchone()[0]
        return value

    return utcnow() + _clock_offset(engine, read)


def _clock_offset(engine: Engine, read: Any) -> timedelta:
    """The database clock's offset from this host's: cached, ``read()`` again when stale."""
    key = str(engine.url)
    found = _clock_offsets.get(key)
    if found is None or time.monotonic() - found[0] > CLOCK_REFRESH_SECONDS:
        before = utcnow()
        value = read()
        after = utcnow()
        offset = value.astimezone(UTC) - (before + (after - before) / 2)
        found = _clock_offsets[key] = (time.monotonic(), offset)
    return found[1]


def db_clock_now(url: str | None = None) -> datetime:
    """:func:`db_clock` for code with no session at hand (Celery turning a countdown into an
    ETA): the cached offset while fresh, one ``clock_timestamp()`` when stale, and this host's
    clock plus the last offset known when the database cannot be asked."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return utcnow()
    found = _clock_offsets.get(str(engine.url))
    if found is not None and time.monotonic() - found[0] <= CLOCK_REFRESH_SECONDS:
        return utcnow() + found[1]
    try:
        with engine.connect() as conn:
            return db_clock(conn)
    except Exception:  # a publish must not fail for want of a clock reading
        return utcnow() + (found[1] if found is not None else timedelta(0))


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (typed Results hide the CursorResult attribute)."""
    return int(getattr(result, "rowcount", 0) or 0)
