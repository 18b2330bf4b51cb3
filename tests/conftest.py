"""Shared fixtures: one PostgreSQL database, one Redis database and one Celery worker per run.

The environment is set in ``pytest_configure``, before any test module imports aicmo, so the
settings every module and every worker process reads are the test ones. A missing service is
an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.support import services
from tests.support.processes import CeleryProcess, wait_for, worker

# The fault suites' books (tests/chaos, tests/hosts): the ``ledger`` fixture and its table.
pytest_plugins = ["tests.support.books"]

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
TEST_ENV: dict[str, str] = {}
_state: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="aicmo-test-"))
    _state["tmp"] = tmp
    (tmp / "imports").mkdir()  # where FETCH_LEADS may read lead files
    try:
        redis_db = services.claim_redis_db(RUN_ID)
    except services.ServiceMissing as exc:
        _state["service_error"] = str(exc)
        redis_db = 15
    _state["redis_db"] = redis_db
    found = services.TestServices(f"aicmo_test_{os.getpid()}", redis_db)
    _state["services"] = found
    TEST_ENV.update(
        {
            "AICMO_DATABASE_URL": found.database_url,
            "AICMO_BROKER_URL": found.broker_url,
            "AICMO_ARTIFACT_DIR": str(tmp / "artifacts"),
            "AICMO_CAM_LEAD_IMPORT_DIR": str(tmp / "imports"),
            "AICMO_ACTION_MODULES": "aicmo.orchestration.adapters,tests.support.actions",
            "AICMO_PROOF_MODE": "true",
            "AICMO_LEASE_MARGIN_SECONDS": "1",
            "AICMO_RESEND_GRACE_SECONDS": "2",
            "AICMO_DISPATCH_HORIZON_SECONDS": "10",
            "AICMO_SWEEP_INTERVAL_SECONDS": "0.5",
            "AICMO_LOG_LEVEL": "INFO",
            # No per-person frequency caps by default: many tests send a sequence's steps to
            # one lead within seconds. The admission tests set the caps they check.
            "AICMO_CAM_FREQUENCY_CAPS": "",
        }
    )
    os.environ.update(TEST_ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if "database_created" in _state:
        services.drop_database(_state["services"].database_name)
    services.release_redis_db(_state.get("redis_db", 15), RUN_ID)
    shutil.rmtree(_state.get("tmp", ""), ignore_errors=True)


def _require_services() -> services.TestServices:
    if "service_error" in _state:
        pytest.fail(f"test services missing: {_state['service_error']}", pytrace=False)
    found: services.TestServices = _state["services"]
    return found


# -- services ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url() -> str:
    """The run's own PostgreSQL database, with the schema made by the Alembic migrations."""
    found = _require_services()
    try:
        services.create_database(found.database_name)
    except services.ServiceMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    _state["database_created"] = True
    from aicmo.migrate import upgrade

    upgrade(found.database_url)
    from aicmo.db import get_engine
    from tests.support.actions import EFFECTS_DDL

    with get_engine(found.database_url).begin() as conn:
        conn.execute(text(EFFECTS_DDL.format(id_type="BIGSERIAL PRIMARY KEY")))
    return found.database_url


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    found = _require_services()
    client = redis.Redis.from_url(found.broker_url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {found.broker_url}: {exc}", pytrace=False)
    return client


@pytest.fixture(scope="session")
def celery_app(database_url: str, redis_client: redis.Redis) -> Any:
    """The real Celery app, pointed at the test broker (importing it installs the dispatcher)."""
    from tasks import app

    return app


@pytest.fixture(scope="session")
def log_dir() -> Path:
    path: Path = _state["tmp"] / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def shared_worker(celery_app: Any, log_dir: Path) -> Iterator[CeleryProcess]:
    """One prefork worker (-c 2) for every test that only needs actions to run. It reads the
    "aol" queue and beat's ("aol.beat"): the "isolated" queue belongs to workers a test
    starts, kills and restarts on its own."""
    from aicmo.config import get_settings

    queues = f"aol,{get_settings().beat_queue}"
    process = worker(log_dir, concurrency=2, extra=["-Q", queues]).start()
    yield process
    process.stop()


@pytest.fixture
def clean(database_url: str, redis_client: redis.Redis) -> Iterator[None]:
    """Empty tables and broker before a test (ids keep growing, so stale messages from an
    earlier test find nothing to claim)."""
    from aicmo.db import get_engine

    tables = (
        "aol_execution_logs, aol_actions, aol_control, test_effects, cam_campaign_metrics, "
        "cam_orchestrator_runs, cam_outreach_messages, cam_leads, cam_campaigns, cam_suppressions, "
        "cam_email_events, cam_sending_brakes"
    )
    for attempt in range(5):
        try:
            with get_engine(database_url).begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} CASCADE"))
            break
        except OperationalError:
            # A worker still finishing a previous test's action can deadlock with TRUNCATE's
            # table locks: try again once it is done.
            if attempt == 4:
                raise
            time.sleep(0.5)
    redis_client.flushdb()
    yield


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    from aicmo.db import session_factory

    with session_factory(database_url)() as s:
        yield s


# -- helpers -------------------------------------------------------------------------------


class Book:
    """Reads the truth: actions, their logs and the effect ledger."""

    def __init__(self, url: str) -> None:
        self.url = url

    def action(self, action_id: int) -> Any:
        from aicmo.db import session_factory
        from aicmo.orchestration.models import AOLAction

        with session_factory(self.url)() as s:
            return s.get(AOLAction, action_id)

    def statuses(self, ids: list[int] | None = None) -> dict[int, str]:
        from aicmo.db import session_factory
        from aicmo.orchestration.models import AOLAction

        with session_factory(self.url)() as s:
            query = select(AOLAction.id, AOLAction.status)
            if ids is not None:
                query = query.where(AOLAction.id.in_(ids))
            return {row.id: row.status for row in s.execute(query)}

    def events(self, action_id: int) -> list[str]:
        from aicmo.db import session_factory
        from aicmo.orchestration.models import AOLExecutionLog

        with session_factory(self.url)() as s:
            return list(
                s.scalars(
                    select(AOLExecutionLog.event)
                    .where(AOLExecutionLog.action_id == action_id)
                    .order_by(AOLExecutionLog.id)
                )
            )

    def effects(self, tag_prefix: str = "") -> list[tuple[str, int, int]]:
        from aicmo.db import get_engine

        with get_engine(self.url).connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT tag, action_id, attempt FROM test_effects WHERE tag LIKE :p ORDER BY id"
                ),
                {"p": f"{tag_prefix}%"},
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]

    def wait_status(self, action_id: int, statuses: set[str] | str, timeout: float = 30.0) -> Any:
        wanted = {statuses} if isinstance(statuses, str) else statuses

        def done() -> Any:
            action = self.action(action_id)
            return action if action is not None and action.status in wanted else None

        try:
            return wait_for(done, timeout, message=f"action {action_id} to be {wanted}")
        except TimeoutError:
            action = self.action(action_id)
            raise AssertionError(
                f"action {action_id} is {action.status if action else 'missing'} "
                f"(attempts {action.attempts if action else '-'}, "
                f"error {action.last_error if action else '-'}), wanted {wanted}"
            ) from None

    def wait_all(self, ids: list[int], statuses: set[str] | str, timeout: float = 60.0) -> None:
        wanted = {statuses} if isinstance(statuses, str) else statuses

        def done() -> bool:
            found = self.statuses(ids)
            return len(found) == len(set(ids)) and all(s in wanted for s in found.values())

        try:
            wait_for(done, timeout, interval=0.2, message=f"{len(ids)} actions to be {wanted}")
        except TimeoutError:
            found = self.statuses(ids)
            stuck = {i: s for i, s in found.items() if s not in wanted}
            raise AssertionError(
                f"{len(stuck)} of {len(ids)} actions not {wanted}: {dict(list(stuck.items())[:10])}"
            ) from None


@pytest.fixture
def book(database_url: str) -> Book:
    return Book(database_url)


def queue_length(client: redis.Redis, queue: str = "aol") -> int:
    return int(client.llen(queue))


class BackgroundSweeper:
    """Runs the real sweeper every ``interval`` seconds in this process, as beat would."""

    def __init__(self, interval: float = 0.3) -> None:
        import threading

        self.interval = interval
        self.reports: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from aicmo.orchestration.sweeper import Sweeper

        sweeper = Sweeper()
        while not self._stop.is_set():
            try:
                self.reports.append(sweeper.sweep())
            except Exception as exc:
                self.reports.append(exc)
            self._stop.wait(self.interval)

    def __enter__(self) -> BackgroundSweeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
