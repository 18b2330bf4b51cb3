"""``make test``'s first step: are PostgreSQL and Redis reachable where the tests look?

Run as ``python -m tests.support.ensure_services``. Both reachable: silent, exit 0. Otherwise,
when a Docker compose client exists, it starts the two from ``docker-compose.test.yml`` (bound
to 127.0.0.1 only, PostgreSQL with trust auth for the throwaway test server) and waits for
them; with no Docker, it says exactly how to start them and exits 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import redis

from tests.support.services import PG_ADMIN_URL, REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
TEST_COMPOSE = ROOT / "docker-compose.test.yml"
WAIT_SECONDS = float(os.environ.get("AICMO_TEST_SERVICES_WAIT", "90"))


def postgres_problem() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {str(exc).strip()}"
    return None


def redis_problem() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis is not reachable at {REDIS_URL}: {exc}"
    return None


def problems() -> list[str]:
    return [found for found in (postgres_problem(), redis_problem()) if found]


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


HOW_TO_START = f"""
The tests need both, on localhost. Start them one of these ways, then run `make test` again:

  with Docker (throwaway servers bound to 127.0.0.1):
    docker compose -f {TEST_COMPOSE.name} up -d postgres redis

  on Debian/Ubuntu (then give the tests the password, below):
    sudo apt-get install postgresql redis-server
    sudo -u postgres psql -c "ALTER USER postgres PASSWORD 'postgres'"
    sudo service redis-server start

  or point the tests at servers you have (a PostgreSQL user that may CREATE DATABASE):
    make test AICMO_TEST_PG_ADMIN=postgresql://postgres:postgres@127.0.0.1:5432/postgres \\
        AICMO_TEST_REDIS=redis://127.0.0.1:6379
"""


def main() -> int:
    found = problems()
    if not found:
        return 0
    for line in found:
        print(line, file=sys.stderr)
    client = compose_client()
    if client is None:
        print(HOW_TO_START, file=sys.stderr)
        return 2
    command = [*client, "-f", str(TEST_COMPOSE), "up", "-d", "postgres", "redis"]
    print(f"starting them with Docker: {' '.join(command)}", file=sys.stderr)
    started = subprocess.run(command, cwd=ROOT)
    if started.returncode != 0:
        print(HOW_TO_START, file=sys.stderr)
        return 2
    deadline = time.monotonic() + WAIT_SECONDS
    while (found := problems()) and time.monotonic() < deadline:
        time.sleep(1)
    for line in found:
        print(f"still waiting after {WAIT_SECONDS}s: {line}", file=sys.stderr)
    return 2 if found else 0


if __name__ == "__main__":
    sys.exit(main())
