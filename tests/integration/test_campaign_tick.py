"""``orchestrator.tick`` called directly, against the real PostgreSQL.

Concurrency here is real: threads with their own sessions and connections, made to overlap
deterministically by holding a row lock the tick needs. Publishes run in this process
through the real Executor; nothing reaches the broker.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

from aicmo.cam import campaigns, keys, leads, review
from aicmo.cam.auto import multichannel_batch
from aicmo.cam.errors import CampaignNotFound, TickLeaseLost
from aicmo.cam.models import Campaign, Lead
from aicmo.cam.orchestrator import TickResult, due_leads_query, tick
from aicmo.config import get_settings
from aicmo.db import get_engine, session_factory, utcnow
from aicmo.llm import LLMError
from aicmo.orchestration.executor import Executor
from tests.support import campaigns as support
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[RecordingDispatcher]:
    with support.recording_dispatcher() as recorder:
        yield recorder


def run_tick(url: str, campaign_id: int, **kwargs: Any) -> TickResult:
    kwargs.setdefault("generator", None)
    with session_factory(url)() as s, s.begin():
        return tick(s, campaign_id, **kwargs)


def publish_all(url: str) -> list[str]:
    """Run every waiting CAMPAIGN_PUBLISH in this process; return their outcomes."""
    outcomes = []
    for action in support.actions(url, keys.PUBLISH):
        if action.status in ("READY", "RETRY"):
            outcomes.append(Executor().run(action.id, keys.PUBLISH).kind.value)
    return outcomes


def test_a_tick_finding_the_lease_held_is_skipped(database_url: str) -> None:
    cid = support.create(database_url, requires_approval=False)
    first_lead = support.lead_ids(database_url, cid)[0]
    with support.lead_row_locked(database_url, first_lead):
        holder = support.Thread(run_tick, database_url, cid)
        holder.start()
        support.wait_for_lock_waiter(database_url)
        other = support.Thread(run_tick, database_url, cid)
        other.start()
        skipped = other.join_result()
        assert (skipped.outcome, skipped.reason) == ("skipped", "lease held by another tick")
        assert holder.is_alive()
    done = holder.join_result()
    assert (done.outcome, done.messages_drafted, done.messages_queued) == ("done", 20, 20)
    assert len(support.messages(database_url, cid)) == 20


def test_a_tick_whose_lease_was_taken_over_rolls_back_and_nothing_is_drafted_twice(
    database_url: str,
) -> None:
    cid = support.create(database_url, requires_approval=False)
    fifth = support.lead_ids(database_url, cid)[4]
    with support.lead_row_locked(database_url, fifth):
        slow = support.Thread(run_tick, database_url, cid, lease_seconds=0.3)
        slow.start()
        support.wait_for_lock_waiter(database_url)  # slow holds leads 1-4, waits on 5
        time.sleep(0.4)  # its lease expires
        late = support.Thread(run_tick, database_url, cid)
        late.start()
        support.wait_for_lock_waiter(database_url, waiters=2)  # late waits on lead 1
    with pytest.raises(TickLeaseLost):
        slow.join_result()
    taken = late.join_result()
    assert (taken.outcome, taken.takeovers, taken.messages_drafted) == ("done", 1, 20)
    sent = support.messages(database_url, cid)
    assert len(sent) == 20 and len({m.lead_id for m in sent}) == 20
    assert len(support.actions(database_url, keys.PUBLISH)) == 20


def test_running_the_same_tick_twice_drafts_and_queues_nothing_twice(database_url: str) -> None:
    cid = support.create(database_url, requires_approval=False)
    now = utcnow()
    first = run_tick(database_url, cid, now=now)
    again = run_tick(database_url, cid, now=now)
    assert (first.messages_drafted, first.messages_queued) == (20, 20)
    assert (again.messages_drafted, again.messages_queued) == (0, 0)
    assert len(support.actions(database_url, keys.PUBLISH)) == 20


class Scripted:
    """A TextGenerator: answers, fails or hangs as told, and counts its calls."""

    def __init__(self, *behaviour: str) -> None:
        self.behaviour = list(behaviour)
        self.calls: list[dict[str, Any]] = []

    def generate(self, prompt: str, **kwargs: Any) -> str:
        self.calls.append({"prompt": prompt, **kwargs})
        what = self.behaviour[min(len(self.calls), len(self.behaviour)) - 1]
        if what == "fail":
            raise LLMError("provider said no")
        if what == "hang":
            time.sleep(3)
        return f"LLM text {len(self.calls)}"


def test_drafts_come_from_the_llm_with_a_template_fallback(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "cam_draft_timeout_seconds", 0.2)
    cid = support.create(database_url, n_leads=6, requires_approval=True)
    llm = Scripted("ok", "fail", "ok", "hang", "ok", "ok")
    result = run_tick(database_url, cid, generator=llm)
    assert (result.llm_drafts, result.llm_failures) == (2, 2)
    # After the second failure the rest of the tick uses templates: no more calls.
    assert len(llm.calls) == 4
    sent = support.messages(database_url, cid)
    assert [m.generated_by for m in sent] == ["llm", "template", "llm"] + ["template"] * 3
    assert sent[0].body == "LLM text 1"
    assert sent[1].body == "Hi Ada1, step 1 from Launch."
    assert sent[1].subject == "Hello Ada1"
    assert llm.calls[0]["idempotency_key"] == f"cam_draft:{sent[0].lead_id}:1"
    assert "Hi Ada0, step 1 from Launch." in llm.calls[0]["prompt"]


def test_waits_between_steps_are_respected(database_url: str) -> None:
    cid = support.create(
        database_url,
        requires_approval=False,
        steps=[
            {"subject": "One", "body": "1", "wait_minutes": 60},
            {"subject": "Two", "body": "2", "wait_minutes": 60},
        ],
    )
    start = utcnow()
    assert run_tick(database_url, cid, now=start).messages_queued == 20
    assert set(publish_all(database_url)) == {"SUCCEEDED"}
    assert run_tick(database_url, cid, now=start + timedelta(minutes=30)).messages_drafted == 0
    later = run_tick(database_url, cid, now=start + timedelta(minutes=61))
    assert (later.messages_drafted, later.messages_queued) == (20, 20)
    assert Counter(m.step for m in support.messages(database_url, cid)) == {1: 20, 2: 20}


def test_approved_messages_beyond_the_daily_limit_wait_for_the_next_local_day(
    database_url: str,
) -> None:
    cid = support.create(database_url, n_leads=5, daily_send_limit=3, requires_approval=True)
    run_tick(database_url, cid)
    drafts = support.messages(database_url, cid)
    with session_factory(database_url)() as s, s.begin():
        results = review.approve_many(s, [m.id for m in drafts], "rev")
    assert [r.queued for r in results] == [True, True, True, False, False]
    assert set(publish_all(database_url)) == {"SUCCEEDED"}
    same_day = run_tick(database_url, cid)
    assert same_day.messages_queued == 0
    tomorrow = run_tick(database_url, cid, now=utcnow() + timedelta(days=1))
    assert tomorrow.messages_queued == 2


def test_leads_that_become_dnc_or_flagged_after_approval_are_not_contacted(
    database_url: str,
) -> None:
    cid = support.create(
        database_url,
        n_leads=3,
        requires_approval=False,
        steps=[{"subject": "Hi", "body": "Hello", "wait_minutes": 600}],
    )
    run_tick(database_url, cid)  # 3 messages queued
    people = support.lead_dicts(3)
    with session_factory(database_url)() as s, s.begin():
        leads.capture(s, cid, "crm", [{**people[0], "consent": "DNC"}])
        leads.set_review_flag(s, support.lead_ids(database_url, cid)[1], True)
    assert sorted(publish_all(database_url)) == ["FAILED", "FAILED", "SUCCEEDED"]
    errors = sorted(a.last_error or "" for a in support.actions(database_url, keys.PUBLISH))
    assert "is DNC" in errors[1] and "flagged for human review" in errors[2]
    # The refusing publish recorded the failure on its message at once (its room is free).
    assert support.statuses(database_url, cid) == Counter({"FAILED": 2, "PUBLISHED": 1})
    assert run_tick(database_url, cid).publishes_failed == 0


def test_multichannel_batch_spreads_a_batch_over_the_channels(database_url: str) -> None:
    cid = support.create(
        database_url,
        n_leads=0,
        requires_approval=True,
        channels=["email", "linkedin"],
        steps=[{"subject": "Hi", "body": "Hello {first_name}", "wait_minutes": 0}],
    )
    people = [
        {**lead, "linkedin_url": f"https://www.linkedin.com/in/ada{i}/"}
        for i, lead in enumerate(support.lead_dicts(6))
    ]
    people.append({"linkedin_url": "linkedin.com/in/only-linkedin"})
    with session_factory(database_url)() as s, s.begin():
        leads.capture(s, cid, "test", people)
    with session_factory(database_url)() as s, s.begin():
        result = multichannel_batch(s, cid, batch_size=10, generator=None)
    assert (result["outcome"], result["drafted"]) == ("done", 7)
    channels = Counter(m.channel for m in support.messages(database_url, cid))
    assert channels == {"email": 3, "linkedin": 4}


def test_a_lead_no_channel_can_reach_is_lost(database_url: str) -> None:
    cid = support.create(database_url, n_leads=0, channels=["email"])
    with session_factory(database_url)() as s, s.begin():
        leads.capture(s, cid, "test", [{"phone": "+33612345678"}, {"email": "a@b.io"}])
    result = run_tick(database_url, cid)
    assert (result.messages_drafted, result.leads_unreachable) == (1, 1)
    with session_factory(database_url)() as s:
        assert sorted(s.scalars(select(Lead.status).where(Lead.campaign_id == cid))) == [
            "LOST",
            "NEW",
        ]


def test_halted_or_missing_campaigns(database_url: str) -> None:
    paused = support.create(database_url, n_leads=2)
    with session_factory(database_url)() as s, s.begin():
        campaigns.pause(s, paused)
    result = run_tick(database_url, paused)
    assert (result.outcome, result.reason, result.messages_drafted) == (
        "stopped",
        "campaign is PAUSED",
        0,
    )
    draft = support.create(database_url, n_leads=2, activate=False)
    assert run_tick(database_url, draft).reason == "campaign is DRAFT"
    with pytest.raises(CampaignNotFound, match="campaign 999999 does not exist"):
        run_tick(database_url, 999_999)


def test_the_due_lead_query_can_use_the_partial_index(database_url: str) -> None:
    cid = support.create(database_url)
    with session_factory(database_url)() as s:
        campaign = s.get(Campaign, cid)
        assert campaign is not None
        query = due_leads_query(campaign, utcnow(), 50)
        sql = str(
            query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
    with get_engine(database_url).connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(conn.execute(text(f"EXPLAIN {sql}")).scalars())
    assert "ix_cam_leads_due" in plan, plan
