"""Counts by (type, status) at scale (aicmo/orchestration/counts.py): a status the planner
expects more than EXACT_LIMIT rows of is given as the planner's estimate (and said to be one);
the rest are counted exactly. The limit is lowered here so that a small table shows it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from aicmo.db import get_engine, session_scope
from aicmo.orchestration import counts
from aicmo.orchestration.stats import collect

pytestmark = pytest.mark.usefixtures("clean")


def fill(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,"
                " not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc)"
                " SELECT 'c' || g, CASE WHEN g % 4 = 0 THEN 'T_B' ELSE 'T_A' END, '{}',"
                " CASE WHEN g <= 7 THEN 'READY' WHEN g % 10 = 5 THEN 'FAILED' ELSE 'SUCCESS' END,"
                " now(), 1, 5, now(), now()"
                " FROM generate_series(1, 2000) AS g"
            )
        )
        conn.execute(text("ANALYZE aol_actions"))


def test_a_status_of_many_rows_is_estimated_and_the_rest_counted(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(database_url)
    with session_scope(database_url) as session:
        exact = collect(session)
    assert exact.estimated == []
    assert exact.by_status()["SUCCESS"] == 1794 and exact.by_status()["READY"] == 7

    monkeypatch.setattr(counts, "EXACT_LIMIT", 300)
    with session_scope(database_url) as session:
        found = collect(session)
    assert found.estimated == ["SUCCESS"]
    assert found.by_status()["FAILED"] == 199  # one of them is READY (g = 5)
    assert found.by_status()["READY"] == 7  # under the limit: exact
    # ANALYZE read every row of this small table: the estimate is close (the planner takes
    # status and type as independent).
    for action_type, actual in (("T_A", 1295), ("T_B", 499)):
        assert abs(found.counts[(action_type, "SUCCESS")] - actual) <= actual * 0.2
    assert found.as_dict()["estimated_statuses"] == ["SUCCESS"]


def test_the_overview_estimates_a_big_status_too(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aicmo.ops.stats import overview

    fill(database_url)
    assert overview()["estimated_statuses"] == []
    monkeypatch.setattr(counts, "EXACT_LIMIT", 100)
    found = overview()
    assert found["estimated_statuses"] == ["FAILED"]
    # An estimate: the planner takes status and type as independent (here they are not).
    assert abs(found["by_status"]["FAILED"] - 199) <= 80
    assert found["by_status"]["READY"] == 7
