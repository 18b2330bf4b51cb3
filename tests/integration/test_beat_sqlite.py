"""The fan-outs and the purge on the embedded default: a SQLite file made by the migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from aicmo.cam import campaigns, keys
from aicmo.cam.models import Campaign
from aicmo.cam.schedule import read_high_water, schedule_daily_metrics, schedule_ticks
from aicmo.db import session_factory, utcnow
from aicmo.migrate import upgrade
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.purge import purge_finished
from tests.support import campaigns as support

pytestmark = pytest.mark.usefixtures("celery_app")


def test_fan_outs_and_purge_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    upgrade(url)
    make = session_factory(url)
    now = datetime(2026, 3, 28, 23, 50, 12, tzinfo=UTC)
    with support.recording_dispatcher(), make() as s, s.begin():
        cid = campaigns.create_campaign(s, support.spec(tick_every_minutes=1)).id
        campaigns.activate(s, cid)
        s.execute(
            update(Campaign)
            .where(Campaign.id == cid)
            .values(created_at_utc=now - timedelta(days=5), updated_at_utc=now - timedelta(days=5))
        )
    with support.recording_dispatcher() as sent:
        with make() as s, s.begin():
            first = schedule_ticks(s, now)
        with make() as s, s.begin():
            # Two minutes later (a slower beat): both slots in between, and the mark moves.
            later = schedule_ticks(s, now + timedelta(minutes=2))
            assert read_high_water(s) == now + timedelta(minutes=2)
        with make() as s, s.begin():
            # A run with an earlier "now" committing later: nothing new, the mark stays.
            assert schedule_ticks(s, now + timedelta(minutes=1)) == []
            assert read_high_water(s) == now + timedelta(minutes=2)
        with make() as s, s.begin():
            # A host whose clock runs a day ahead, then the right time again: nothing is
            # skipped for long, and the mark comes back.
            schedule_ticks(s, now + timedelta(days=1))
        with make() as s, s.begin():
            back = schedule_ticks(s, now + timedelta(minutes=3))
            assert read_high_water(s) == now + timedelta(minutes=3)
        with make() as s, s.begin():
            on = schedule_ticks(s, now + timedelta(minutes=4))
        with make() as s, s.begin():
            metrics = schedule_daily_metrics(s, utcnow())
    assert [e.idempotency_key for e in first] == [f"cam_tick:{cid}:2026-03-28T23:50:00+00:00"]
    assert [e.idempotency_key for e in later] == [
        f"cam_tick:{cid}:2026-03-28T23:51:00+00:00",
        f"cam_tick:{cid}:2026-03-28T23:52:00+00:00",
    ]
    assert [e.idempotency_key for e in back] == [f"cam_tick:{cid}:2026-03-28T23:53:00+00:00"]
    assert [e.idempotency_key for e in on] == [f"cam_tick:{cid}:2026-03-28T23:54:00+00:00"]
    assert len(metrics) == 3 and all(e.action_type == keys.FETCH_METRICS for e in metrics)
    # Six ticks (one of them the next day's, by the clock running ahead), two past days'
    # metrics (today's waits).
    assert len(sent.ids) == 6 + 2
    with make() as s, s.begin():
        s.execute(
            update(AOLAction).values(
                status="SUCCESS", finished_at_utc=utcnow() - timedelta(days=31)
            )
        )
    report = purge_finished(timedelta(days=30), url=url, batch_size=2)
    assert (report.actions, report.batches) == (9, 5)
