"""The review gate and CAMPAIGN_PUBLISH, run in this process by the real Executor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from aicmo.cam import campaigns, keys, review
from aicmo.cam.errors import MessageNotFound, ReviewError
from aicmo.cam.models import Lead
from aicmo.cam.orchestrator import tick
from aicmo.db import get_engine, session_factory
from aicmo.gateways.ports import OutgoingEmail, SendResult
from aicmo.orchestration.adapters import campaign_adapter
from aicmo.orchestration.dispatch import get_dispatcher, install_dispatcher
from aicmo.orchestration.errors import TransientError
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from tests.support import campaigns as support
from tests.support.recording import RecordingDispatcher

pytestmark = pytest.mark.usefixtures("clean", "celery_app")


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[RecordingDispatcher]:
    with support.recording_dispatcher() as recorder:
        yield recorder


def drafted(url: str, n: int = 3, **overrides: Any) -> tuple[int, list[int]]:
    cid = support.create(url, n_leads=n, **overrides)
    with session_factory(url)() as s, s.begin():
        tick(s, cid, generator=None)
    return cid, [m.id for m in support.messages(url, cid)]


def run(action_id: int) -> Any:
    return Executor().run(action_id, keys.PUBLISH)


def test_approve_and_reject_follow_the_review_state_machine(database_url: str) -> None:
    cid, (first, second, third) = drafted(database_url)
    with session_factory(database_url)() as s, s.begin():
        approved = review.approve(s, first, "ada", note="good")
        assert (approved.publish_status, approved.queued) == ("QUEUED", True)
        assert review.approve(s, first, "ada") == approved  # again: nothing changes
        rejected = review.reject(s, second, "bob", "tone")
        assert (rejected.publish_status, rejected.queued) == ("REJECTED", False)
        with pytest.raises(ReviewError, match="is REJECTED; only DRAFT"):
            review.approve(s, second, "ada")
        with pytest.raises(ReviewError, match="reviewer must be"):
            review.approve(s, third, "  ")
        with pytest.raises(MessageNotFound):
            review.approve(s, 999_999, "ada")
    with session_factory(database_url)() as s:
        views = review.list_messages(s, cid, status="DRAFT")
        assert [(v.id, v.lead, v.step) for v in views] == [(third, "Ada2", 1)]
        flagged = s.scalars(
            select(Lead.requires_human_review).where(Lead.campaign_id == cid).order_by(Lead.id)
        ).all()
        assert flagged == [False, True, False]  # a rejection takes its lead out of the flow

    action_id = approved.publish_action_id
    assert action_id is not None
    assert run(action_id).kind is OutcomeKind.SUCCEEDED
    with session_factory(database_url)() as s, s.begin():
        with pytest.raises(ReviewError, match="is PUBLISHED"):
            review.reject(s, first, "bob")
        action = s.get(AOLAction, action_id)
        assert action is not None and action.idempotency_key == f"cam_publish:{first}"


def test_rejecting_a_queued_message_cancels_its_publish(database_url: str) -> None:
    _, (first, *_) = drafted(database_url)
    with session_factory(database_url)() as s, s.begin():
        action_id = review.approve(s, first, "ada").publish_action_id
        review.reject(s, first, "bob", "changed my mind")
    assert action_id is not None
    assert support.actions(database_url, keys.PUBLISH)[0].status == "CANCELLED"
    assert run(action_id).kind is OutcomeKind.SKIPPED


def test_the_gate_refuses_draft_and_rejected_messages(database_url: str) -> None:
    cid, (draft, rejected, _) = drafted(database_url)
    with session_factory(database_url)() as s, s.begin():
        review.reject(s, rejected, "bob")
        ids = {
            mid: ActionQueue.enqueue_action(
                s, keys.PUBLISH, {"message_id": mid}, keys.publish_key(mid)
            ).id
            for mid in (draft, rejected)
        }
    for action_id in ids.values():
        assert run(action_id).kind is OutcomeKind.FAILED
    errors = {
        a.payload_json["message_id"]: a.last_error
        for a in support.actions(database_url, keys.PUBLISH)
    }
    assert errors == {
        draft: f"ReviewGateClosed: review gate: message {draft} is DRAFT",
        rejected: f"ReviewGateClosed: review gate: message {rejected} is REJECTED",
    }
    assert {a.attempts for a in support.actions(database_url, keys.PUBLISH)} == {1}
    assert support.statuses(database_url, cid) == Counter({"DRAFT": 2, "REJECTED": 1})


class FlakySender:
    """Fails transiently once, then sends; remembers the idempotency keys it was given."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def send(self, email: OutgoingEmail, idempotency_key: str) -> SendResult:
        self.keys.append(idempotency_key)
        if len(self.keys) == 1:
            raise TransientError("SMTP 451: try again later", retry_after=0)
        return SendResult(external_id="<sent@example.com>")


def test_a_transient_gateway_error_retries_through_the_aol(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = FlakySender()
    monkeypatch.setattr(campaign_adapter, "email_sender", lambda *args, **kwargs: sender)
    cid, (first, *_) = drafted(database_url)
    with session_factory(database_url)() as s, s.begin():
        action_id = review.approve(s, first, "ada").publish_action_id
    assert action_id is not None

    assert run(action_id).kind is OutcomeKind.RETRY
    assert support.statuses(database_url, cid)["QUEUED"] == 1
    assert support.actions(database_url, keys.PUBLISH)[0].status == "RETRY"

    assert run(action_id).kind is OutcomeKind.SUCCEEDED
    message = support.messages(database_url, cid)[0]
    assert (message.publish_status, message.external_id) == ("PUBLISHED", "<sent@example.com>")
    assert sender.keys == [f"cam_publish:{first}"] * 2
    with session_factory(database_url)() as s:
        lead = s.get(Lead, message.lead_id)
        assert lead is not None and lead.status == "CONTACTED"
        assert lead.next_action_at_utc is not None and lead.last_contacted_at_utc is not None


def test_live_mode_without_a_gateway_fails_the_publish_for_good(database_url: str) -> None:
    cid, (first, *_) = drafted(database_url, mode="live")
    with session_factory(database_url)() as s, s.begin():
        action_id = review.approve(s, first, "ada").publish_action_id
    assert action_id is not None
    settings = Executor().settings.model_copy(update={"proof_mode": False})
    outcome = Executor(settings=settings).run(action_id, keys.PUBLISH)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.startswith("RealRunUnconfigured")
    with session_factory(database_url)() as s, s.begin():
        tick(s, cid, generator=None)  # records the failure on the message
    message = support.messages(database_url, cid)[0]
    assert message.publish_status == "FAILED"
    assert message.error is not None and "RealRunUnconfigured" in message.error


def test_a_publish_stopped_by_the_kill_switch_is_replayed_when_it_is_lifted(
    database_url: str,
) -> None:
    cid, (first, *_) = drafted(database_url)
    with session_factory(database_url)() as s, s.begin():
        action_id = review.approve(s, first, "ada").publish_action_id
        campaigns.set_kill_switch(s, cid, True)
    assert action_id is not None
    outcome = run(action_id)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == (
        f"CampaignHalted: campaign {cid} is halted (its kill switch is on): "
        f"message {first} not sent"
    )
    # The halted publish handed its message back (APPROVED, holding no daily room) in the
    # transaction that saw the halt.
    [message] = [m for m in support.messages(database_url, cid) if m.id == first]
    assert (message.publish_status, message.publish_action_id) == ("APPROVED", action_id)
    with session_factory(database_url)() as s, s.begin():
        campaigns.resume(s, cid)
    # Resume queues it again under a key of its own; the halted action stays FAILED.
    old, again = support.actions(database_url, keys.PUBLISH)
    assert (old.id, old.status) == (action_id, "FAILED")
    assert (again.idempotency_key, again.status) == (f"cam_publish:{first}:{action_id}", "READY")
    assert run(again.id).kind is OutcomeKind.SUCCEEDED
    assert support.statuses(database_url, cid)["PUBLISHED"] == 1


def test_campaign_status_transitions_are_checked(database_url: str) -> None:
    cid = support.create(database_url, n_leads=0, activate=False)
    with session_factory(database_url)() as s, s.begin():
        assert campaigns.activate(s, cid).status == "ACTIVE"
        assert campaigns.pause(s, cid).status == "PAUSED"
        assert campaigns.stop(s, cid).status == "STOPPED"
        with pytest.raises(campaigns.InvalidCampaign, match="is STOPPED; it cannot become"):
            campaigns.activate(s, cid)
    with session_factory(database_url)() as s:
        assert [c.id for c in campaigns.list_campaigns(s, "STOPPED")] == [cid]


class VisibilityCheck(RecordingDispatcher):
    """Records, for each published action, whether another connection could already see it."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.invisible: list[int] = []

    def publish(self, items: Any) -> None:
        ids = [item.action_id for item in items]
        with get_engine(self.url).connect() as conn:
            seen = set(conn.execute(select(AOLAction.id).where(AOLAction.id.in_(ids))).scalars())
        self.invisible += [i for i in ids if i not in seen]
        super().publish(items)


def test_approving_many_in_one_transaction_publishes_only_after_the_commit(
    database_url: str,
) -> None:
    # Several enqueues in one transaction: each used to publish the previous ones early,
    # when its SAVEPOINT was released (the engine now publishes at the outermost commit).
    _, ids = drafted(database_url, n=4)
    check = VisibilityCheck(database_url)
    previous = get_dispatcher()
    install_dispatcher(check)
    try:
        with session_factory(database_url)() as s, s.begin():
            results = review.approve_many(s, ids, "ada")
            assert check.sent == []
    finally:
        install_dispatcher(previous)
    assert sorted(check.ids) == sorted(r.publish_action_id for r in results)
    assert check.invisible == []


def _decide_many(url: str, decide: Any, ids: list[int]) -> list[review.ReviewResult]:
    with session_factory(url)() as s, s.begin():
        results: list[review.ReviewResult] = decide(s, ids, "ada")
        return results


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_batches_over_two_campaigns_in_opposite_orders_never_deadlock(
    database_url: str, decision: str
) -> None:
    """Deterministic: a third session holds message a1, so the first caller stops on it
    holding whatever it took before; the second caller runs into the first. Locking in
    input order (campaign A, then B for the first; B, then A for the second) was a deadlock
    the moment a1 was let go; one global order makes the second simply wait."""
    decide = getattr(review, f"{decision}_many")
    _, (a1, a2) = drafted(database_url, n=2)
    _, (b1, b2) = drafted(database_url, n=2)
    with session_factory(database_url)() as blocker:
        blocker.begin()
        blocker.execute(
            text("SELECT id FROM cam_outreach_messages WHERE id = :id FOR UPDATE"), {"id": a1}
        )
        first = support.Thread(_decide_many, database_url, decide, [a1, b1])
        first.start()
        support.wait_for_lock_waiter(database_url)
        second = support.Thread(_decide_many, database_url, decide, [b1, a2, a1])
        second.start()
        support.wait_for_lock_waiter(database_url, waiters=2)
        blocker.rollback()
    results = first.join_result() + second.join_result()  # a deadlock raises here
    want = "QUEUED" if decision == "approve" else "REJECTED"
    assert {r.message_id: r.publish_status for r in results} == {a1: want, a2: want, b1: want}
    assert b2  # untouched
