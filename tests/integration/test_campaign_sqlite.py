"""The embedded path: the whole campaign flow on a SQLite file made by the migrations."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from aicmo.cam import campaigns, keys, leads, review
from aicmo.cam.clock import local_date
from aicmo.cam.metrics import get_metrics
from aicmo.cam.orchestrator import take_lease
from aicmo.cam.schedule import enqueue_ticks
from aicmo.db import get_engine, session_factory, utcnow
from aicmo.migrate import upgrade
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.queue import ActionQueue
from tests.support import campaigns as support

pytestmark = pytest.mark.usefixtures("celery_app")


def test_campaign_flow_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    engine = get_engine(url)
    executor = Executor(engine=engine)
    make = session_factory(url)

    with support.recording_dispatcher() as sent:
        with make() as s, s.begin():
            cid = campaigns.create_campaign(s, support.spec(daily_send_limit=3)).id
            report = leads.capture(
                s, cid, "test", [*support.lead_dicts(4), {"email": "LEAD0@example0.com"}]
            )
            campaigns.activate(s, cid)
        assert (len(report.created), len(report.merged)) == (4, 1)

        with make() as s, s.begin():
            tick_id = enqueue_ticks(s, [cid], utcnow())[0].action_id
        outcome = executor.run(tick_id, keys.TICK)
        assert outcome.kind is OutcomeKind.SUCCEEDED, outcome.error
        assert outcome.result is not None and outcome.result["messages_drafted"] == 4

        drafts = support.messages(url, cid)
        with make() as s, s.begin():
            results = review.approve_many(s, [m.id for m in drafts], "ada")
        assert [r.queued for r in results] == [True, True, True, False]  # daily limit 3
        for result in results[:3]:
            assert result.publish_action_id is not None
            assert executor.run(result.publish_action_id, keys.PUBLISH).kind is (
                OutcomeKind.SUCCEEDED
            )
        assert support.statuses(url, cid) == Counter({"PUBLISHED": 3, "APPROVED": 1})

        day = local_date(drafts[0].created_at_utc, "Europe/Paris")
        with make() as s, s.begin():
            metrics_id = ActionQueue.enqueue_action(
                s,
                keys.FETCH_METRICS,
                {"campaign_id": cid, "date": day.isoformat()},
                keys.metrics_key(cid, day),
            ).id
        assert executor.run(metrics_id, keys.FETCH_METRICS).kind is OutcomeKind.SUCCEEDED
        with make() as s:
            row = get_metrics(s, cid, day)
            assert row is not None
            assert (row.leads_captured, row.messages_drafted, row.messages_published) == (4, 4, 3)
        assert len(sent.ids) == 5  # the tick, three publishes, the metrics

    # The lease on SQLite: one holder at a time, an expired one is taken over.
    now = utcnow()
    held = take_lease(engine, cid, now, 60)
    assert held is not None and take_lease(engine, cid, now, 60) is None
    taken = take_lease(engine, cid, now + timedelta(seconds=61), 60)
    assert taken is not None and (taken.run_id, taken.takeovers) == (held.run_id, 1)
    engine.dispose()
