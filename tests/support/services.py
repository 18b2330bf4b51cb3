"""The real PostgreSQL and Redis the tests use, each run in a database of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
import redis

PG_ADMIN_URL = os.environ.get(
    "AICMO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Where the tests connect, when not where databases are made: PgBouncer in transaction
# pooling cannot CREATE DATABASE for them (tests/hosts/test_pgbouncer.py).
PG_CONNECT_URL = os.environ.get("AICMO_TEST_PG_CONNECT", PG_ADMIN_URL)
REDIS_URL = os.environ.get("AICMO_TEST_REDIS", "redis://127.0.0.1:6379")
LOCK_TTL_SECONDS = 3 * 3600


class ServiceMissing(RuntimeError):
    pass


@dataclass
class TestServices:
    database_name: str
    redis_db: int

    @property
    def database_url(self) -> str:
        base = PG_CONNECT_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        return f"{base}/{self.database_name}"

    @property
    def broker_url(self) -> str:
        return f"{REDIS_URL}/{self.redis_db}"


# The numbers this process holds: restart_redis() loses every key, the locks with them, and
# must set them again, or a run started after the restart (a nested pytest, a second
# session) would take the same number and share this run's queues.
_held: dict[int, str] = {}


def claim_redis_db(owner: str) -> int:
    """One Redis database number per test run, so parallel runs never share queues."""
    client = redis.Redis.from_url(f"{REDIS_URL}/0")
    try:
        for number in range(15, 0, -1):
            if client.set(f"aicmo:test-lock:{number}", owner, nx=True, ex=LOCK_TTL_SECONDS):
                _held[number] = owner
                return number
    except redis.ConnectionError as exc:
        raise ServiceMissing(f"Redis is not reachable at {REDIS_URL}: {exc}") from exc
    raise ServiceMissing("no free Redis database number (1-15) for this test run")


def release_redis_db(number: int, owner: str) -> None:
    client = redis.Redis.from_url(f"{REDIS_URL}/0")
    try:
        if client.get(f"aicmo:test-lock:{number}") == owner.encode():
            client.delete(f"aicmo:test-lock:{number}")
        _held.pop(number, None)
    except redis.ConnectionError:
        pass


def create_database(name: str) -> None:
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise ServiceMissing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}") from exc


def drop_database(name: str) -> None:
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.OperationalError:
        pass


def restart_redis() -> None:
    """Restart the local Redis the way CI starts it: nothing kept on disk, so all data is lost."""
    import subprocess
    import time

    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True).returncode:
            break
        time.sleep(0.05)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=True,
    )
    for _ in range(200):
        done = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True)
        if done.stdout.strip() == b"PONG":
            client = redis.Redis.from_url(f"{REDIS_URL}/0")
            for number, owner in _held.items():
                client.set(f"aicmo:test-lock:{number}", owner, ex=LOCK_TTL_SECONDS)
            return
        time.sleep(0.05)
    raise ServiceMissing("Redis did not come back after the restart")


def restart_postgres() -> None:
    """Restart the local PostgreSQL cluster (every connection is cut)."""
    import subprocess
    from pathlib import Path

    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
    )
