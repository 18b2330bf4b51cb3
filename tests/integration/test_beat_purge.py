"""aol.purge: terminal actions older than the retention go, with their logs, in batches; no
other row is ever touched."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update

from aicmo.db import get_engine, session_factory, utcnow
from aicmo.migrate import upgrade
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.purge import batch_query, purge_finished
from aicmo.orchestration.queue import ActionQueue
from tests.support import campaigns as support
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

OLD = timedelta(days=40)
RECENT = timedelta(days=5)
TERMINAL = ("SUCCESS", "FAILED", "DLQ", "CANCELLED")
WAITING = ("PENDING", "READY", "RETRY", "RUNNING")


def make_actions(url: str, n: int, status: str, finished_ago: timedelta | None) -> list[int]:
    """``n`` actions forced into ``status``, finished ``finished_ago``, two log rows each."""
    now = utcnow()
    with support.recording_dispatcher(), session_factory(url)() as s, s.begin():
        made = ActionQueue.enqueue_many(s, [("T_EFFECT", {"tag": f"p{i}"}) for i in range(n)])
        ids = [e.action_id for e in made]
        s.execute(
            update(AOLAction)
            .where(AOLAction.id.in_(ids))
            .values(
                status=status,
                finished_at_utc=None if finished_ago is None else now - finished_ago,
            )
        )
        s.execute(
            insert(AOLExecutionLog),
            [
                {"action_id": i, "event": event, "created_at_utc": now}
                for i in ids
                for event in ("CLAIMED", "SUCCEEDED")
            ],
        )
    return ids


def counts(url: str) -> dict[str, int]:
    with session_factory(url)() as s:
        return {
            "actions": int(s.scalar(select(func.count()).select_from(AOLAction)) or 0),
            "logs": int(s.scalar(select(func.count()).select_from(AOLExecutionLog)) or 0),
        }


def remaining(url: str, ids: list[int]) -> set[int]:
    with session_factory(url)() as s:
        return set(s.scalars(select(AOLAction.id).where(AOLAction.id.in_(ids))))


def build_table(url: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {"doomed": [], "kept": []}
    for status in TERMINAL:
        groups["doomed"] += make_actions(url, 6, status, OLD)  # 24 old finished actions
        groups["kept"] += make_actions(url, 2, status, RECENT)  # within the retention
    groups["kept"] += make_actions(url, 2, "SUCCESS", None)  # never finished: never purged
    for status in WAITING:
        # Not finished, whatever finished_at_utc says (e.g. a replayed DLQ action).
        groups["kept"] += make_actions(url, 2, status, OLD)
    return groups


def test_purge_deletes_old_terminal_actions_and_their_logs_in_batches(database_url: str) -> None:
    groups = build_table(database_url)
    before = counts(database_url)
    report = purge_finished(timedelta(days=30), batch_size=7)
    assert (report.actions, report.logs, report.batches, report.complete) == (24, 48, 4, True)
    assert remaining(database_url, groups["doomed"]) == set()
    assert remaining(database_url, groups["kept"]) == set(groups["kept"])
    assert counts(database_url) == {
        "actions": before["actions"] - 24,
        "logs": before["logs"] - 48,
    }
    # Nothing left to do: a second run deletes nothing.
    again = purge_finished(timedelta(days=30), batch_size=7)
    assert (again.actions, again.batches, again.complete) == (0, 0, True)
    # A shorter retention reaches the recent terminal ones, and still no waiting one.
    purge_finished(timedelta(days=1))
    with session_factory(database_url)() as s:
        rows = s.execute(select(AOLAction.status, func.count()).group_by(AOLAction.status))
        left = {status: n for status, n in rows}
    assert left == {"SUCCESS": 2, **dict.fromkeys(WAITING, 2)}


def test_a_run_stops_at_its_cap_and_the_next_one_goes_on(database_url: str) -> None:
    doomed = make_actions(database_url, 30, "SUCCESS", OLD)
    first = purge_finished(timedelta(days=30), batch_size=10, max_batches=2)
    assert (first.actions, first.batches, first.complete) == (20, 2, False)
    budget = purge_finished(timedelta(days=30), batch_size=5, max_seconds=0)
    assert (budget.actions, budget.batches, budget.complete) == (5, 1, False)
    rest = purge_finished(timedelta(days=30), batch_size=10)
    assert (rest.actions, rest.complete) == (5, True)
    assert remaining(database_url, doomed) == set()


def test_the_batch_query_is_answered_by_the_partial_index(database_url: str) -> None:
    """Its cost is the rows it deletes, not the size of the table."""
    make_actions(database_url, 50, "SUCCESS", OLD)
    make_actions(database_url, 50, "READY", None)
    query = batch_query(utcnow() - timedelta(days=30), 5000)
    compiled = query.compile(
        dialect=get_engine(database_url).dialect, compile_kwargs={"literal_binds": True}
    )
    with get_engine(database_url).connect() as conn:
        conn.execute(text("ANALYZE aol_actions"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_aol_actions_finished" in plan, plan


def test_the_purge_task_runs_on_a_worker_with_the_configured_retention(
    database_url: str, celery_app: Any, shared_worker: Any
) -> None:
    old = make_actions(database_url, 3, "DLQ", OLD)  # AICMO_RETENTION_DAYS: 30 by default
    recent = make_actions(database_url, 3, "DLQ", RECENT)
    celery_app.send_task("aol.purge")
    wait_for(lambda: not remaining(database_url, old), 30, message="the purge task")
    assert remaining(database_url, recent) == set(recent)


def test_purge_on_the_embedded_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'purge.db'}"
    upgrade(url)
    groups = build_table(url)
    report = purge_finished(timedelta(days=30), batch_size=10, url=url)
    assert (report.actions, report.logs, report.batches) == (24, 48, 3)
    assert remaining(url, groups["doomed"]) == set()
    assert remaining(url, groups["kept"]) == set(groups["kept"])


def test_the_report_is_json_ready(database_url: str) -> None:
    report = purge_finished(timedelta(days=30), now=datetime.fromisoformat("2030-01-01T00:00Z"))
    assert report.as_dict()["cutoff"] == "2029-12-02T00:00:00+00:00"
