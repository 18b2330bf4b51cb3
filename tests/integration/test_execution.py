"""Guarantees 3, 4 and 5, pause, replay and cancel, with a real worker process."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from aicmo.db import session_scope, utcnow
from aicmo.orchestration import manager
from aicmo.orchestration.dispatch import Dispatch, get_dispatcher
from aicmo.orchestration.errors import InvalidTransition
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.sweeper import Sweeper
from tests.conftest import Book
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean", "shared_worker")


def enqueue(action_type: str, payload: dict[str, Any], key: str | None = None, **kw: Any) -> int:
    with session_scope() as s:
        return ActionQueue.enqueue_action(s, action_type, payload, key, **kw).id


def test_happy_path_records_result_artifact_and_log(book: Book) -> None:
    action_id = enqueue("POST_SOCIAL", {"social_platform": "linkedin", "content": "Hello"}, "hp")
    action = book.wait_status(action_id, "SUCCESS")
    assert action.attempts == 1 and action.finished_at_utc is not None
    [artifact] = action.result_json["artifacts"]
    assert len(artifact["sha256"]) == 64
    assert book.events(action_id) == ["CLAIMED", "SUCCEEDED"]
    with session_scope() as s:
        log = s.scalars(
            select(AOLExecutionLog).where(
                AOLExecutionLog.action_id == action_id, AOLExecutionLog.event == "SUCCEEDED"
            )
        ).one()
        assert log.artifact_sha256 == artifact["sha256"] and log.duration_ms is not None


# -- guarantee 3: at most one execution at a time, exactly one success --------------------


def test_same_message_delivered_three_times_runs_once(book: Book) -> None:
    action_id = enqueue("T_EFFECT", {"tag": "dup", "sleep": 0.3})
    get_dispatcher().publish([Dispatch(action_id, "T_EFFECT")] * 2)
    book.wait_status(action_id, "SUCCESS")
    wait_for(
        lambda: book.events(action_id).count("SKIPPED_DUPLICATE") == 2,
        10,
        message="both duplicates to be skipped",
    )
    assert book.effects("dup") == [("dup", action_id, 1)]
    assert book.events(action_id).count("CLAIMED") == 1


def test_zombie_run_whose_lease_expired_cannot_commit(book: Book) -> None:
    """A run outlives its lease (say the host froze): the sweeper hands the action to another
    run; the first one's SUCCESS is fenced off and its writes roll back."""
    action_id = enqueue("T_EFFECT", {"tag": "zombie", "sleep": 2.0})
    book.wait_status(action_id, "RUNNING")
    # Make the lease run out now: the sweeper moves it to RETRY and sends it again.
    with session_scope() as s:
        s.execute(
            update(AOLAction)
            .where(AOLAction.id == action_id)
            .values(lease_expires_at_utc=utcnow() - timedelta(seconds=1))
        )
    report = Sweeper().sweep()
    assert report.lease_expired == 1
    book.wait_status(action_id, "SUCCESS", timeout=20)
    wait_for(lambda: "LEASE_LOST" in book.events(action_id), 10, message="the zombie to stop")
    assert book.effects("zombie") == [("zombie", action_id, 2)]
    events = book.events(action_id)
    assert events.count("SUCCEEDED") == 1 and "LEASE_EXPIRED" in events


# -- guarantees 4 and 5: exactly-once DB effects, retries and dead letters ----------------


def test_fails_twice_then_succeeds_with_one_effect(book: Book) -> None:
    action_id = enqueue("T_EFFECT", {"tag": "flaky", "fail_first": 2})
    action = book.wait_status(action_id, "SUCCESS")
    assert action.attempts == 3 and action.last_error is None
    # The rows written by the two failed attempts rolled back with them.
    assert book.effects("flaky") == [("flaky", action_id, 3)]
    assert book.events(action_id) == [
        "CLAIMED",
        "RETRY_SCHEDULED",
        "CLAIMED",
        "RETRY_SCHEDULED",
        "CLAIMED",
        "SUCCEEDED",
    ]


def test_always_failing_action_ends_in_dlq_with_backoff(book: Book) -> None:
    action_id = enqueue("T_ALWAYS_FAIL", {"tag": "down"})
    action = book.wait_status(action_id, "DLQ")
    assert action.attempts == action.max_attempts == 3
    assert "upstream unavailable (attempt 3)" in action.last_error
    assert book.events(action_id)[-1] == "DEAD_LETTERED"
    with session_scope() as s:
        claims = s.scalars(
            select(AOLExecutionLog.created_at_utc)
            .where(AOLExecutionLog.action_id == action_id, AOLExecutionLog.event == "CLAIMED")
            .order_by(AOLExecutionLog.id)
        ).all()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(claims)]
    # FAST_RETRY: 0.2 s then 0.4 s, no jitter: the second wait is longer than the first.
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4


def test_permanent_error_fails_at_once(book: Book) -> None:
    action_id = enqueue("T_EFFECT", {"tag": "perm", "permanent": True})
    action = book.wait_status(action_id, "FAILED")
    assert action.attempts == 1 and "refused for good" in action.last_error
    time.sleep(0.5)
    assert book.action(action_id).attempts == 1, "a permanent error was retried"


def test_live_mode_without_poster_is_failed_not_retried(book: Book, celery_app: Any) -> None:
    # The shared worker is in proof mode; the seed's direct API shows live mode's refusal.
    from aicmo.orchestration.adapters.social_adapter import RealRunUnconfigured, handle_post_social

    later = datetime.now(UTC) + timedelta(hours=1)  # out of the shared worker's way
    payload = {"social_platform": "x", "content": "y"}
    with session_scope() as s:
        live = ActionQueue.enqueue_action(s, "POST_SOCIAL", payload, "live-1", later).id
        proof = ActionQueue.enqueue_action(s, "POST_SOCIAL", payload, "live-2", later).id
    with session_scope() as s, pytest.raises(RealRunUnconfigured, match="no social poster"):
        handle_post_social(s, live, payload)
    with session_scope() as s:
        result = handle_post_social(s, proof, payload, proof_mode=True)
    assert result["external_id"].startswith("proof-x-") and result["artifacts"]
    assert (book.action(live).status, book.action(proof).status) == ("FAILED", "SUCCESS")
    assert book.action(live).attempts == 1  # FAILED at once, not retried


def test_payload_invalid_at_run_time_is_failed_with_the_message(book: Book) -> None:
    now = utcnow()
    with session_scope() as s:
        action_id = s.execute(
            insert(AOLAction)
            .values(
                idempotency_key="stale-schema",
                action_type="POST_SOCIAL",
                payload_json={"social_platform": "x"},
                status="READY",
                not_before_utc=now,
                attempts=0,
                max_attempts=5,
                created_at_utc=now,
                updated_at_utc=now,
                queued_at_utc=now,
            )
            .returning(AOLAction.id)
        ).scalar_one()
    get_dispatcher().publish([Dispatch(action_id, "POST_SOCIAL")])
    action = book.wait_status(action_id, "FAILED")
    assert action.attempts == 1
    assert action.last_error == "invalid payload: content: Field required"


# -- pause, replay, cancel ----------------------------------------------------------------


def test_paused_actions_wait_unclaimed_and_run_after_resume(book: Book, session: Session) -> None:
    with session.begin():
        manager.pause(session, reason="incident 42")
    action_id = enqueue("T_EFFECT", {"tag": "paused"})
    # The worker receives the message but leaves the action alone.
    wait_for(lambda: "left unclaimed" in _worker_log(), 10, message="worker to see the pause")
    action = book.action(action_id)
    assert (action.status, action.attempts) == ("READY", 0)
    assert Sweeper().sweep(now=utcnow() + timedelta(minutes=5)).paused
    assert book.action(action_id).attempts == 0
    with session.begin():
        manager.resume(session)
    Sweeper().sweep()
    action = book.wait_status(action_id, "SUCCESS")
    assert action.attempts == 1, "the pause spent an attempt"
    assert book.effects("paused") == [("paused", action_id, 1)]


def test_pause_of_one_type_leaves_the_others_running(book: Book, session: Session) -> None:
    with session.begin():
        manager.pause(session, "T_GATED")
    try:
        other = enqueue("T_EFFECT", {"tag": "other"})
        held = enqueue("T_GATED", {"tag": "held"})
        book.wait_status(other, "SUCCESS")
        time.sleep(0.5)
        assert book.action(held).attempts == 0
    finally:
        with session.begin():
            manager.resume(session, "T_GATED")


def test_dead_letter_is_replayed_to_success_keeping_history(book: Book, session: Session) -> None:
    action_id = enqueue("T_GATED", {"tag": "gate"})
    book.wait_status(action_id, "DLQ")
    with session.begin():
        session.execute(
            text("INSERT INTO test_effects (tag, action_id, attempt) VALUES ('open:gate', 0, 0)")
        )
        replayed = manager.replay(session, action_id, by="ops@example.com")
        assert replayed.status == "READY" and replayed.attempts == 0
    action = book.wait_status(action_id, "SUCCESS")
    assert action.attempts == 1
    events = book.events(action_id)
    assert events.count("CLAIMED") == 4 and "DEAD_LETTERED" in events and "REPLAYED" in events
    with pytest.raises(InvalidTransition, match="SUCCESS"), session.begin():
        manager.replay(session, action_id)


def test_replay_all_dead_letters_of_a_type(book: Book, session: Session) -> None:
    ids = [enqueue("T_ALWAYS_FAIL", {"tag": f"bulk{n}"}) for n in range(3)]
    book.wait_all(ids, "DLQ")
    with session.begin():
        assert sorted(manager.replay_dead_letters(session, "T_ALWAYS_FAIL")) == sorted(ids)
    book.wait_all(ids, "DLQ")
    assert all(book.events(i).count("CLAIMED") == 6 for i in ids)


def test_cancel_waiting_action_and_refuse_finished_one(book: Book, session: Session) -> None:
    later = enqueue(
        "T_EFFECT", {"tag": "later"}, None, not_before=datetime.now(UTC) + timedelta(hours=3)
    )
    with session.begin():
        assert manager.cancel(session, later).status == "CANCELLED"
    assert Sweeper().sweep(now=utcnow() + timedelta(hours=4)).dispatched == 0
    done = enqueue("T_EFFECT", {"tag": "done"})
    book.wait_status(done, "SUCCESS")
    with pytest.raises(InvalidTransition, match=r"cannot be cancelled|only"), session.begin():
        manager.cancel(session, done)


def test_a_sent_message_for_a_cancelled_action_does_nothing(book: Book, session: Session) -> None:
    with session.begin():
        manager.pause(session)
    action_id = enqueue("T_EFFECT", {"tag": "cancelled"})
    with session.begin():
        manager.cancel(session, action_id)
        manager.resume(session)
    get_dispatcher().publish([Dispatch(action_id, "T_EFFECT")])
    wait_for(lambda: "SKIPPED_DUPLICATE" in book.events(action_id), 10, message="the skip")
    assert book.action(action_id).status == "CANCELLED"
    assert book.effects("cancelled") == []


# -- the Celery way -----------------------------------------------------------------------


def test_delay_goes_through_the_idempotent_enqueue(book: Book, celery_app: Any) -> None:
    task = celery_app.tasks["aol.T_EFFECT"]
    first = task.delay({"tag": "celery"}, idempotency_key="celery-1")
    second = task.delay(tag="celery", idempotency_key="celery-1")
    assert first.action_id == second.action_id and first.created and not second.created
    assert first.get(timeout=20) == {"tag": "celery", "attempt": 1}
    assert book.effects("celery") == [("celery", first.action_id, 1)]


def test_apply_async_countdown_becomes_not_before(book: Book, celery_app: Any) -> None:
    started = datetime.now(UTC)
    handle = celery_app.tasks["aol.T_EFFECT"].apply_async(({"tag": "cd"},), countdown=1.5)
    action = book.wait_status(handle.action_id, "SUCCESS")
    assert action.not_before_utc - started >= timedelta(seconds=1.4)
    assert action.started_at_utc >= action.not_before_utc


def test_unsupported_celery_options_are_refused(celery_app: Any, session: Session) -> None:
    with pytest.raises(TypeError, match="link"):
        celery_app.tasks["aol.T_EFFECT"].apply_async(({"tag": "x"},), link="nope")
    assert session.scalar(select(func.count()).select_from(AOLAction)) == 0


def _worker_log() -> str:
    from tests.conftest import _state

    logs = sorted((_state["tmp"] / "logs").glob("worker-*.log"))
    return "".join(path.read_text(errors="replace") for path in logs)


def test_deferred_runs_do_not_spend_attempts(book: Book) -> None:
    # Five "no room in the rate limit" turns against max_attempts=3: waiting is not failing.
    action_id = enqueue("T_DEFER", {"tag": "wait-turn", "defer_times": 5})
    action = book.wait_status(action_id, "SUCCESS")
    assert action.attempts == 1
    assert book.events(action_id).count("DEFERRED") == 5
    assert book.effects("wait-turn") == [("wait-turn", action_id, 1)]
