"""A campaign with 20 leads, run end to end by real CAMPAIGN_TICK actions through Celery.

Real PostgreSQL, real Redis, the shared `celery -A tasks worker -c 2` process. Each test is
one item of the issue's list.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicmo.cam import campaigns, keys, leads, review, suppressions, webhooks
from aicmo.cam.clock import local_date
from aicmo.cam.models import CampaignMetrics, Lead, OrchestratorRun, OutreachMessage
from aicmo.config import get_settings
from aicmo.db import session_factory
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.status import ActionStatus
from tests.conftest import ROOT, Book
from tests.support import campaigns as support
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean", "shared_worker")

TERMINAL = {"SUCCESS", "FAILED", "DLQ", "CANCELLED"}


def run_tick(url: str, book: Book, campaign_id: int) -> dict[str, Any]:
    action_id = support.enqueue_tick(url, campaign_id)
    action = book.wait_status(action_id, "SUCCESS")
    result: dict[str, Any] = action.result_json
    return result


def settle(url: str, book: Book, action_type: str = keys.PUBLISH) -> list[AOLAction]:
    """Wait until every action of the type is finished; return them."""
    found = support.actions(url, action_type)
    book.wait_all([a.id for a in found], TERMINAL)
    return support.actions(url, action_type)


def artifact_files(message_ids: list[int]) -> list[Path]:
    folder = Path(get_settings().artifact_dir).resolve() / "campaign_publish"
    from aicmo.orchestration.artifacts import safe_name

    return [
        folder / f"{safe_name(keys.publish_key(mid))}.eml"
        for mid in message_ids
        if (folder / f"{safe_name(keys.publish_key(mid))}.eml").exists()
    ]


def test_drafts_are_never_published_and_approving_five_publishes_exactly_five(
    database_url: str, book: Book
) -> None:
    cid = support.create(database_url, requires_approval=True)

    first = run_tick(database_url, book, cid)
    assert (first["outcome"], first["messages_drafted"], first["messages_queued"]) == (
        "done",
        20,
        0,
    )
    second = run_tick(database_url, book, cid)
    assert second["messages_drafted"] == 0  # every lead waits on its DRAFT
    assert support.statuses(database_url, cid) == Counter({"DRAFT": 20})
    assert support.actions(database_url, keys.PUBLISH) == []

    # A publish forced on a DRAFT: refused by the review gate, not retried, nothing sent.
    drafts = support.messages(database_url, cid)
    forced = drafts[0].id
    with session_factory(database_url)() as s, s.begin():
        action_id = ActionQueue.enqueue_action(
            s, keys.PUBLISH, {"message_id": forced}, keys.publish_key(forced)
        ).id
    failed = book.wait_status(action_id, "FAILED")
    assert failed.last_error == f"ReviewGateClosed: review gate: message {forced} is DRAFT"
    assert failed.attempts == 1
    assert artifact_files([forced]) == []
    assert support.statuses(database_url, cid) == Counter({"DRAFT": 20})

    # Approving five publishes exactly those five (the forced one included: a replay).
    chosen = [m.id for m in drafts[:5]]
    with session_factory(database_url)() as s, s.begin():
        results = review.approve_many(s, chosen, "reviewer@example.com")
    assert all(r.queued for r in results)
    published = settle(database_url, book)
    assert sorted(a.payload_json["message_id"] for a in published) == chosen
    assert {a.status for a in published} == {"SUCCESS"}
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 5, "DRAFT": 15})
    assert len(artifact_files(chosen)) == 5
    assert artifact_files([m.id for m in drafts[5:]]) == []
    with session_factory(database_url)() as s:
        events = s.scalars(
            select(AOLExecutionLog.event)
            .join(AOLAction)
            .where(AOLAction.action_type == keys.PUBLISH, AOLExecutionLog.event == "SUCCEEDED")
        ).all()
        assert len(events) == 5
        contacted = s.scalars(
            select(Lead.id).where(Lead.campaign_id == cid, Lead.status == "CONTACTED")
        ).all()
        assert sorted(contacted) == sorted(m.lead_id for m in drafts[:5])


def test_dnc_suppressed_and_under_review_leads_are_never_contacted(
    database_url: str, book: Book
) -> None:
    cid = support.create(database_url, n_leads=0, requires_approval=False)
    excluded = [
        {"email": "dnc1@example.com", "consent": "DNC"},
        {"email": "dnc2@example.com", "consent": "dnc"},
        {"email": "blocked@example.com"},
        {"email": "anyone@blocked-domain.io"},
        {"email": "review@example.com", "requires_human_review": True},
    ]
    with session_factory(database_url)() as s, s.begin():
        leads.capture(s, cid, "test", [*support.lead_dicts(15), *excluded])
        suppressions.suppress(s, "email", "Blocked@Example.com", "asked")
        suppressions.suppress(s, "domain", "blocked-domain.io", "competitor")

    for _ in range(4):  # 3 steps, then the sequence ends
        run_tick(database_url, book, cid)
        settle(database_url, book)

    sent = support.messages(database_url, cid)
    assert len(sent) == 15 * 3 and {m.publish_status for m in sent} == {"PUBLISHED"}
    with session_factory(database_url)() as s:
        never = s.scalars(
            select(Lead).where(
                Lead.campaign_id == cid, Lead.email.in_([e["email"].lower() for e in excluded])
            )
        ).all()
        assert len(never) == 5
        assert all(lead.step == 0 and lead.last_contacted_at_utc is None for lead in never)
        assert not s.scalars(
            select(OutreachMessage).where(OutreachMessage.lead_id.in_([n.id for n in never]))
        ).all()
    text = b"".join(path.read_bytes() for path in artifact_files([m.id for m in sent]))
    for entry in excluded:
        assert entry["email"].lower().encode() not in text.lower()


def test_daily_limit_holds_across_ticks(database_url: str, book: Book) -> None:
    cid = support.create(database_url, requires_approval=False, daily_send_limit=7, batch_size=5)
    first = run_tick(database_url, book, cid)
    second = run_tick(database_url, book, cid)  # the first tick's publishes may be in flight
    assert first["messages_queued"] == 5
    assert first["messages_queued"] + second["messages_queued"] == 7
    settle(database_url, book)
    third = run_tick(database_url, book, cid)
    assert (third["messages_drafted"], third["messages_queued"]) == (0, 0)
    published = settle(database_url, book)
    assert len(published) == 7 and {a.status for a in published} == {"SUCCESS"}
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 7})


def test_kill_switch_flipped_mid_tick_stops_it(database_url: str, book: Book) -> None:
    cid = support.create(database_url, requires_approval=False, batch_size=20)
    tenth = support.lead_ids(database_url, cid)[9]
    with support.lead_row_locked(database_url, tenth):
        action_id = support.enqueue_tick(database_url, cid)
        support.wait_for_lock_waiter(database_url)  # the tick is at lead 10
        with session_factory(database_url)() as s, s.begin():
            campaigns.set_kill_switch(s, cid, True)
    result = book.wait_status(action_id, "SUCCESS").result_json
    assert (result["outcome"], result["reason"]) == ("stopped", "kill switch is on")
    assert result["messages_drafted"] == 10
    assert result["messages_queued"] == 0
    assert support.statuses(database_url, cid) == Counter({"APPROVED": 10})
    assert support.actions(database_url, keys.PUBLISH) == []
    # While it is on, ticks stop at once.
    assert run_tick(database_url, book, cid)["outcome"] == "stopped"
    # Off again: the next tick queues what was drafted and drafts the rest.
    with session_factory(database_url)() as s, s.begin():
        campaigns.set_kill_switch(s, cid, False)
    resumed = run_tick(database_url, book, cid)
    assert (resumed["messages_drafted"], resumed["messages_queued"]) == (10, 20)
    settle(database_url, book)
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 20})


CRASHING_TICK = """
import os, sys
from aicmo.cam.orchestrator import tick
from aicmo.db import session_factory

class Crash:
    def generate(self, prompt, **kwargs):
        os._exit(9)  # the worker dies mid-tick: nothing of its transaction commits

with session_factory()() as s, s.begin():
    tick(s, int(sys.argv[1]), lease_seconds=float(sys.argv[2]), generator=Crash())
"""


def test_crashed_tick_lease_is_taken_over_after_expiry(database_url: str, book: Book) -> None:
    cid = support.create(database_url, requires_approval=False)
    lease = 2.0
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_TICK, str(cid), str(lease)],
        cwd=ROOT,
        capture_output=True,
    )
    assert crashed.returncode == 9, crashed.stderr.decode()
    assert support.messages(database_url, cid) == []

    held = run_tick(database_url, book, cid)
    assert (held["outcome"], held["reason"]) == ("skipped", "lease held by another tick")
    assert support.messages(database_url, cid) == []

    with session_factory(database_url)() as s:
        left = s.scalars(select(OrchestratorRun).where(OrchestratorRun.campaign_id == cid)).one()
    assert left.status == "RUNNING"  # the crashed tick's lease, left behind
    time.sleep(max(0.0, (left.lease_expires_at_utc - datetime.now(UTC)).total_seconds()) + 0.1)
    taken = run_tick(database_url, book, cid)
    assert (taken["outcome"], taken["takeovers"], taken["messages_drafted"]) == ("done", 1, 20)
    with session_factory(database_url)() as s:
        runs = s.scalars(select(OrchestratorRun).where(OrchestratorRun.campaign_id == cid)).all()
    assert [(r.status, r.takeovers) for r in runs] == [("DONE", 1)]
    settle(database_url, book)
    assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 20})


def test_two_concurrent_ticks_publish_nothing_twice(database_url: str, book: Book) -> None:
    # A long wait after step 1: however many ticks run, each lead gets exactly one message.
    cid = support.create(
        database_url,
        requires_approval=False,
        steps=[{"subject": "Hi", "body": "Hello {first_name}", "wait_minutes": 600}],
    )
    first_lead = support.lead_ids(database_url, cid)[0]
    with support.lead_row_locked(database_url, first_lead):
        a = support.enqueue_tick(database_url, cid)
        b = support.enqueue_tick(database_url, cid)
        support.wait_for_lock_waiter(database_url)  # one tick holds the lease, blocked

        def one_skipped() -> bool:
            results = [book.action(i) for i in (a, b)]
            return any(
                r.status == "SUCCESS" and r.result_json["outcome"] == "skipped" for r in results
            )

        wait_for(one_skipped, 30, message="the second tick to be skipped")
    book.wait_all([a, b], "SUCCESS")
    # Two more at once, racing freely on the two worker processes.
    extra = [support.enqueue_tick(database_url, cid) for _ in range(2)]
    book.wait_all(extra, "SUCCESS")
    published = settle(database_url, book)

    results = [book.action(i).result_json for i in (a, b, *extra)]
    assert sorted(r["outcome"] for r in results[:2]) == ["done", "skipped"]
    assert sum(r["messages_drafted"] for r in results) == 20
    assert sum(r["messages_queued"] for r in results) == 20
    sent = support.messages(database_url, cid)
    assert len(sent) == 20 and len({m.lead_id for m in sent}) == 20
    assert {m.publish_status for m in sent} == {"PUBLISHED"}
    assert len(published) == 20
    assert len({a.payload_json["message_id"] for a in published}) == 20
    with session_factory(database_url)() as s:
        events = Counter(
            s.scalars(
                select(AOLExecutionLog.action_id).where(
                    AOLExecutionLog.action_id.in_([p.id for p in published]),
                    AOLExecutionLog.event == "SUCCEEDED",
                )
            )
        )
    assert set(events.values()) == {1}


def test_three_step_sequence_advances_one_step_per_due_tick_and_ends_lost(
    database_url: str, book: Book
) -> None:
    cid = support.create(database_url, requires_approval=False)
    for step in (1, 2, 3):
        result = run_tick(database_url, book, cid)
        assert (result["messages_drafted"], result["messages_queued"]) == (20, 20)
        settle(database_url, book)
        with session_factory(database_url)() as s:
            found = s.scalars(select(Lead).where(Lead.campaign_id == cid)).all()
        assert {(lead.step, lead.status) for lead in found} == {(step, "CONTACTED")}
        per_lead = Counter(m.lead_id for m in support.messages(database_url, cid))
        assert set(per_lead.values()) == {step}
        assert support.statuses(database_url, cid) == Counter({"PUBLISHED": 20 * step})
    final = run_tick(database_url, book, cid)
    assert (final["messages_drafted"], final["leads_lost"]) == (0, 20)
    with session_factory(database_url)() as s:
        assert set(s.scalars(select(Lead.status).where(Lead.campaign_id == cid))) == {"LOST"}
    assert len(support.messages(database_url, cid)) == 60
    steps = sorted((m.lead_id, m.step) for m in support.messages(database_url, cid))
    assert steps == sorted((lead, n) for lead in {s for s, _ in steps} for n in (1, 2, 3))


def test_captured_duplicates_merge(database_url: str, book: Book) -> None:
    cid = support.create(database_url, n_leads=0)
    originals = support.lead_dicts(20)
    again = [
        {**lead, "email": lead["email"].upper(), "phone": f"+33 6 12 34 56 {i:02d}"}
        for i, lead in enumerate(originals)
    ]
    again[5]["consent"] = "DNC"
    again += [
        {"first_name": "Nobody"},  # no identity: rejected, not hashed randomly
        {"email": "not-an-address"},
        {"phone": "+33612345600", "title": "CTO"},  # lead 0, by its phone only
    ]
    with session_factory(database_url)() as s, s.begin():
        one = leads.enqueue_capture(s, cid, "crm", "evt-1", originals)
        again_one = leads.enqueue_capture(s, cid, "crm", "evt-1", originals)
    assert one.idempotency_key == "cam_leads:crm:evt-1"
    assert (again_one.action_id, again_one.created) == (one.action_id, False)
    first = book.wait_status(one.action_id, "SUCCESS").result_json
    with session_factory(database_url)() as s, s.begin():
        two = leads.enqueue_capture(s, cid, "crm", "evt-2", again)
    second = book.wait_status(two.action_id, "SUCCESS").result_json
    assert (first["created"], first["merged"], first["invalid"]) == (20, 0, [])
    assert (second["created"], second["merged"]) == (0, 21)
    assert [item["index"] for item in second["invalid"]] == [20, 21]
    assert "needs an email, a phone number or a LinkedIn URL" in second["invalid"][0]["reason"]
    assert "not an email address" in second["invalid"][1]["reason"]

    # DNC is never overwritten by a later capture.
    with session_factory(database_url)() as s, s.begin():
        three = leads.enqueue_capture(
            s, cid, "crm", "evt-3", [{**originals[5], "consent": "CONSENTED"}]
        )
    book.wait_status(three.action_id, "SUCCESS")
    with session_factory(database_url)() as s:
        found = s.scalars(select(Lead).where(Lead.campaign_id == cid).order_by(Lead.id)).all()
    assert len(found) == 20
    assert found[0].phone == "+33612345600" and found[0].title == "CTO"
    assert found[5].consent == "DNC"
    assert {lead.consent for i, lead in enumerate(found) if i != 5} == {"UNKNOWN"}


def test_forged_webhook_is_refused(
    database_url: str, book: Book, monkeypatch: pytest.MonkeyPatch, session: Session
) -> None:
    cid = support.create(database_url, n_leads=0)
    monkeypatch.setattr(get_settings(), "cam_webhook_secrets", {"typeform": SecretStr("s3cret")})
    body = b'{"event_id": "tf-1", "campaign_id": %d, "leads": [{"email": "a@b.io"}]}' % cid
    now = int(time.time())
    good = {"X-Aicmo-Signature": webhooks.sign("s3cret", body, now, source="typeform")}

    refusals: list[tuple[Any, ...]] = [
        (
            "typeform",
            body,
            {"X-Aicmo-Signature": webhooks.sign("guess", body, now, source="typeform")},
            webhooks.BadSignature,
            "does not match",
        ),
        ("typeform", body + b" ", good, webhooks.BadSignature, "does not match"),
        ("typeform", body, {}, webhooks.BadSignature, "missing"),
        (
            "typeform",
            body,
            {"x-aicmo-signature": webhooks.sign("s3cret", body, now - 3600, source="typeform")},
            webhooks.BadSignature,
            "replay",
        ),
        ("other", body, good, webhooks.UnknownSource, "no secret"),
        ("typeform", b"{" * 300_000, good, webhooks.BodyTooLarge, "over the limit"),
    ]
    for source, raw, headers, error, message in refusals:
        with pytest.raises(error, match=message):
            webhooks.receive(source, raw, headers)
    bad_json = b"{not json"
    with pytest.raises(webhooks.BadPayload, match="not UTF-8 JSON"):
        webhooks.receive(
            "typeform",
            bad_json,
            {"X-Aicmo-Signature": webhooks.sign("s3cret", bad_json, now, source="typeform")},
        )
    assert session.scalars(select(AOLAction)).all() == []

    receipt = webhooks.receive("typeform", body, good)
    assert receipt.created and receipt.idempotency_key == "cam_leads:typeform:tf-1"
    book.wait_status(receipt.action_id, "SUCCESS")
    again = webhooks.receive("typeform", body, good)
    assert (again.action_id, again.created) == (receipt.action_id, False)
    other = b'{"event_id": "tf-1", "campaign_id": %d, "leads": [{"email": "x@y.io"}]}' % cid
    with pytest.raises(webhooks.DuplicateEvent):
        webhooks.receive(
            "typeform",
            other,
            {"X-Aicmo-Signature": webhooks.sign("s3cret", other, now, source="typeform")},
        )
    assert support.count(database_url, Lead, campaign_id=cid) == 1
    assert support.count(database_url, AOLAction) == 1


def test_metrics_for_a_date_are_correct_and_idempotent(database_url: str, book: Book) -> None:
    cid = support.create(database_url, requires_approval=True)
    run_tick(database_url, book, cid)
    drafts = support.messages(database_url, cid)
    with session_factory(database_url)() as s, s.begin():
        review.approve_many(s, [m.id for m in drafts[:5]], "rev")
        for m in drafts[5:7]:
            review.reject(s, m.id, "rev", "off-brand")
    settle(database_url, book)
    day = local_date(drafts[0].created_at_utc, "Europe/Paris")

    with session_factory(database_url)() as s, s.begin():
        action = ActionQueue.enqueue_action(
            s,
            keys.FETCH_METRICS,
            {"campaign_id": cid, "date": day.isoformat()},
            keys.metrics_key(cid, day),
        )
    result = book.wait_status(action.id, "SUCCESS").result_json
    expected = {
        "leads_captured": 20,
        "messages_drafted": 20,
        "messages_approved": 5,
        "messages_rejected": 2,
        "messages_published": 5,
        "messages_failed": 0,
    }
    assert {k: result[k] for k in expected} == expected
    assert result["by_channel"] == {
        "email": {"drafted": 20, "approved": 5, "rejected": 2, "published": 5, "failed": 0}
    }
    assert result["external"] == {"email": {"source": "proof", "metrics": {}}}

    # Enqueueing the same date again is the same action.
    with session_factory(database_url)() as s, s.begin():
        same = ActionQueue.enqueue_action(
            s,
            keys.FETCH_METRICS,
            {"campaign_id": cid, "date": day.isoformat()},
            keys.metrics_key(cid, day),
        )
    assert same.id == action.id

    # Collecting the date again after more activity (an action of its own: the first one
    # succeeded once and stays so) updates its one row.
    with session_factory(database_url)() as s, s.begin():
        review.approve_many(s, [m.id for m in drafts[7:10]], "rev")
    settle(database_url, book)
    with session_factory(database_url)() as s, s.begin():
        rerun = ActionQueue.enqueue_action(
            s,
            keys.FETCH_METRICS,
            {"campaign_id": cid, "date": day.isoformat()},
            f"{keys.metrics_key(cid, day)}:again",
        )
    again = book.wait_status(rerun.id, "SUCCESS").result_json
    assert (again["messages_approved"], again["messages_published"]) == (8, 8)
    with session_factory(database_url)() as s:
        rows = s.scalars(select(CampaignMetrics).where(CampaignMetrics.campaign_id == cid)).all()
    assert [(r.metric_date, r.messages_published, r.messages_drafted) for r in rows] == [
        (day, 8, 20)
    ]
    assert book.action(action.id).status == ActionStatus.SUCCESS
    assert datetime.now(UTC) >= rows[0].collected_at_utc
