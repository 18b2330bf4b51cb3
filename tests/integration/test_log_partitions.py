"""PostgreSQL's monthly partitions of aol_execution_logs (migration 0010,
aicmo/orchestration/partitions.py): the migration both ways on a table with rows, inserts in
the right month or DEFAULT (never an error), the purge dropping whole months (and never the
logs of a kept action), two purges at once, a drop that cannot get its lock giving up instead
of stalling the writers, and beat's purge task making the months ahead.

Each test but the last has a database of its own: they make and drop partitions."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from aicmo.db import get_engine
from aicmo.migrate import downgrade, upgrade
from aicmo.orchestration import partitions
from aicmo.orchestration.purge import purge_finished
from tests.support import services
from tests.support.processes import wait_for

RETENTION = timedelta(days=30)


@pytest.fixture
def own_url() -> Iterator[str]:
    name = f"aicmo_parts_{uuid.uuid4().hex[:10]}"
    services.create_database(name)
    base = services.PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        services.drop_database(name)


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    with get_engine(url).begin() as conn:
        result = conn.execute(text(statement), params)
        return list(result) if result.returns_rows else []


def db_now(url: str) -> datetime:
    return sql(url, "SELECT now()")[0][0]


def action(url: str, status: str, finished: datetime | None) -> int:
    return sql(
        url,
        "INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,"
        " not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc,"
        " finished_at_utc) VALUES (:k, 'T_EFFECT', '{}', :s, now(), 1, 5, now(), now(), :f)"
        " RETURNING id",
        k=uuid.uuid4().hex,
        s=status,
        f=finished,
    )[0][0]


def logs(url: str, action_id: int, *times: datetime) -> None:
    for moment in times:
        sql(
            url,
            "INSERT INTO aol_execution_logs (action_id, event, attempt, created_at_utc)"
            " VALUES (:a, 'SUCCEEDED', 1, :t)",
            a=action_id,
            t=moment,
        )


def where(url: str, action_id: int) -> list[str]:
    """The partition each of the action's log rows is in, oldest first."""
    rows = sql(
        url,
        "SELECT tableoid::regclass::text FROM aol_execution_logs WHERE action_id = :a"
        " ORDER BY created_at_utc",
        a=action_id,
    )
    return [r[0] for r in rows]


def month(url: str, shift: int) -> datetime:
    return partitions.add_months(partitions.month_start(db_now(url)), shift)


def make_month(url: str, shift: int) -> str:
    with get_engine(url).connect() as conn, conn.begin():
        partitions.create_month(conn, month(url, shift))
    return partitions.partition_name(month(url, shift))


def attached(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        return partitions.attached(conn)


def test_the_migration_partitions_a_table_with_rows_and_goes_back(own_url: str) -> None:
    upgrade(own_url, "0009_cam_admission")
    now = db_now(own_url)
    a = action(own_url, "SUCCESS", now)
    times = [now - timedelta(days=61), now, now - timedelta(days=3650), now + timedelta(days=200)]
    logs(own_url, a, *times)
    upgrade(own_url)
    two_months_back = partitions.partition_name(partitions.month_start(times[0]))
    assert where(own_url, a) == [
        partitions.DEFAULT_PARTITION,  # ten years back: older than the months made
        two_months_back,
        partitions.partition_name(month(own_url, 0)),
        partitions.DEFAULT_PARTITION,  # beyond next month
    ]
    assert partitions.partition_name(month(own_url, 1)) in attached(own_url)
    # Ids keep coming from the same sequence, after the copied rows'.
    before = sql(own_url, "SELECT max(id) FROM aol_execution_logs")[0][0]
    logs(own_url, a, now)
    assert sql(own_url, "SELECT max(id) FROM aol_execution_logs")[0][0] > before

    downgrade(own_url, "0009_cam_admission")
    assert attached(own_url) == []
    assert len(where(own_url, a)) == 5
    fk = sql(
        own_url,
        "SELECT confdeltype FROM pg_constraint WHERE conname = :n",
        n=partitions.PG_ABSENT_FOREIGN_KEY,
    )
    assert fk == [("c",)]  # ON DELETE CASCADE, as before 0010
    upgrade(own_url)
    assert len(where(own_url, a)) == 5


def test_an_insert_for_a_month_without_partition_lands_in_default_and_moves_later(
    own_url: str,
) -> None:
    upgrade(own_url)
    a = action(own_url, "READY", None)
    far = month(own_url, 7) + timedelta(days=3)
    logs(own_url, a, db_now(own_url), far)
    assert where(own_url, a) == [
        partitions.partition_name(month(own_url, 0)),
        partitions.DEFAULT_PARTITION,
    ]
    made = make_month(own_url, 7)
    assert where(own_url, a) == [partitions.partition_name(month(own_url, 0)), made]
    # Making it again does nothing.
    with get_engine(own_url).connect() as conn, conn.begin():
        assert partitions.create_month(conn, month(own_url, 7)) is False


def test_ensure_makes_the_months_ahead_once(own_url: str) -> None:
    upgrade(own_url)
    made = partitions.ensure_partitions(own_url, ahead=3)
    # The migration made this month and the next one.
    assert made == [partitions.partition_name(month(own_url, n)) for n in (2, 3)]
    assert partitions.ensure_partitions(own_url, ahead=3) == []


def test_two_maintainers_at_once_make_each_month_once(own_url: str) -> None:
    upgrade(own_url)
    made: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            made.extend(partitions.ensure_partitions(own_url, ahead=5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    expected = [partitions.partition_name(month(own_url, n)) for n in range(2, 6)]
    assert len(made) == len(set(made)), f"a month made twice: {made}"
    assert set(made) <= set(expected)
    # A maintainer that cannot get a lock within its lock_timeout gives that month up for the
    # next run (a busy CI machine saw both give one up): the next run makes what is missing.
    partitions.ensure_partitions(own_url, ahead=5)
    assert set(expected) <= set(attached(own_url))


def build_old_month(url: str) -> dict[str, int]:
    """A month three back holding the logs of an old finished action (doomed) and of one
    replayed since (kept, READY), and a recent finished action (kept)."""
    make_month(url, -3)
    old = month(url, -3) + timedelta(days=5)
    now = db_now(url)
    made = {
        "doomed": action(url, "SUCCESS", now - timedelta(days=70)),
        "replayed": action(url, "READY", None),
        "recent": action(url, "SUCCESS", now - timedelta(days=2)),
        "doomed_now": action(url, "DLQ", now - timedelta(days=40)),
    }
    logs(url, made["doomed"], old, old + timedelta(hours=1))
    logs(url, made["replayed"], old, now)
    logs(url, made["recent"], old, now)  # e.g. retried for months, finished two days ago
    logs(url, made["doomed_now"], now)  # its log in the boundary month: deleted row-wise
    return made


def test_the_purge_drops_a_whole_old_month_and_keeps_the_logs_of_kept_actions(
    own_url: str,
) -> None:
    upgrade(own_url)
    made = build_old_month(own_url)
    old_month = partitions.partition_name(month(own_url, -3))
    report = purge_finished(RETENTION, url=own_url)
    assert report.complete and report.actions == 2
    assert report.partitions_dropped == [old_month]
    assert report.kept_log_rows == 2
    assert report.logs == 1  # only doomed_now's, row-wise; doomed's went with the month
    assert old_month not in attached(own_url)
    assert where(own_url, made["doomed"]) == [] and where(own_url, made["doomed_now"]) == []
    current = partitions.partition_name(month(own_url, 0))
    assert where(own_url, made["replayed"]) == [partitions.DEFAULT_PARTITION, current]
    assert where(own_url, made["recent"]) == [partitions.DEFAULT_PARTITION, current]

    # Once the replayed action is finished and old, its rows in DEFAULT go row-wise.
    sql(
        own_url,
        "UPDATE aol_actions SET status = 'SUCCESS', finished_at_utc = now() - interval '40 days'"
        " WHERE id = :a",
        a=made["replayed"],
    )
    again = purge_finished(RETENTION, url=own_url)
    assert (again.actions, again.logs, again.partitions_dropped) == (1, 2, [])
    assert where(own_url, made["recent"]) == [partitions.DEFAULT_PARTITION, current]


def test_an_interrupted_purge_drops_no_month(own_url: str) -> None:
    upgrade(own_url)
    build_old_month(own_url)
    cut = purge_finished(RETENTION, url=own_url, batch_size=1, max_batches=1)
    assert not cut.complete and cut.partitions_dropped == []
    assert partitions.partition_name(month(own_url, -3)) in attached(own_url)


def test_two_purges_at_once_drop_each_month_once(own_url: str) -> None:
    upgrade(own_url)
    made = build_old_month(own_url)
    make_month(own_url, -4)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(purge_finished(RETENTION, url=own_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    dropped = sorted(name for r in reports for name in r.partitions_dropped)
    expected = sorted(partitions.partition_name(month(own_url, n)) for n in (-4, -3))
    assert dropped == expected
    assert sum(r.actions for r in reports) == 2
    assert not set(expected) & set(attached(own_url))
    assert len(where(own_url, made["replayed"])) == 2


def test_a_drop_that_cannot_get_its_lock_gives_up_instead_of_stalling_the_writers(
    own_url: str,
) -> None:
    upgrade(own_url)
    made = build_old_month(own_url)
    old_month = partitions.partition_name(month(own_url, -3))
    dsn = own_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as writer:  # a worker's open transaction on the log
        writer.execute(
            "INSERT INTO aol_execution_logs (action_id, event, attempt, created_at_utc)"
            " VALUES (%s, 'CLAIMED', 1, now())",
            (made["replayed"],),
        )
        started = time.monotonic()
        report = purge_finished(RETENTION, url=own_url)
        waited = time.monotonic() - started
        assert report.partitions_dropped == [] and old_month in attached(own_url)
        # Three tries of lock_timeout (0.5 s) and short pauses, never the writer's whole life.
        assert waited < 5, waited
        writer.commit()
    assert purge_finished(RETENTION, url=own_url).partitions_dropped == [old_month]


@pytest.mark.usefixtures("clean")
def test_the_purge_task_makes_next_months_partition(
    database_url: str, celery_app: Any, shared_worker: Any
) -> None:
    upgrade(database_url)
    following = partitions.partition_name(month(database_url, 2))
    if following in attached(database_url):
        sql(database_url, f"ALTER TABLE aol_execution_logs DETACH PARTITION {following}")
        sql(database_url, f"DROP TABLE {following}")
    celery_app.send_task("aol.purge")
    wait_for(lambda: following in attached(database_url), 30, message="the purge task's partitions")


def test_an_action_deleted_through_the_orm_takes_its_log_rows(own_url: str) -> None:
    from aicmo.db import session_scope
    from aicmo.orchestration.models import AOLAction

    upgrade(own_url)
    a = action(own_url, "SUCCESS", db_now(own_url))
    logs(own_url, a, db_now(own_url))
    with session_scope(own_url) as session:
        session.delete(session.get(AOLAction, a))
    assert where(own_url, a) == []
