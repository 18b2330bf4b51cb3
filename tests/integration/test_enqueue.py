"""Guarantees 1, 2, 6 and 9 against the real PostgreSQL and Redis (no worker needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicmo.db import session_factory
from aicmo.orchestration.dispatch import get_dispatcher
from aicmo.orchestration.errors import IdempotencyConflict, InvalidPayload, PayloadTooLarge
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.sweeper import Sweeper
from tests.conftest import ROOT, queue_length
from tests.support.messages import message_ids

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

# An action type on the "isolated" queue: the shared worker (if a test started it) does not
# read that queue, so the messages these tests look for stay in Redis.
POST = {"tag": "launch", "sleep": 0.0}
TYPE = "T_ISOLATED_EFFECT"
Q = "isolated"


def messages(client: redis.Redis, queue: str = Q) -> list[int]:
    """Action ids of the task messages waiting in a Redis queue (a batch message's all)."""
    return message_ids(client, queue)


def count_rows(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AOLAction)) or 0)


# -- guarantee 1: idempotent enqueue ------------------------------------------------------


def test_same_key_same_payload_returns_existing_and_sends_nothing(
    session: Session, redis_client: redis.Redis
) -> None:
    with session.begin():
        first = ActionQueue.enqueue_action(session, TYPE, POST, "launch-1")
    with session.begin():
        again = ActionQueue.enqueue_action(
            session, TYPE, dict(reversed(list(POST.items()))), "launch-1"
        )
    assert again.id == first.id
    assert count_rows(session) == 1
    assert messages(redis_client) == [first.id]


def test_same_key_different_payload_or_type_is_a_conflict(session: Session) -> None:
    with session.begin():
        first_id = ActionQueue.enqueue_action(session, TYPE, POST, "launch-2").id
    with pytest.raises(IdempotencyConflict, match="different payload") as err, session.begin():
        ActionQueue.enqueue_action(session, TYPE, {**POST, "tag": "x"}, "launch-2")
    assert err.value.existing_id == first_id
    with pytest.raises(IdempotencyConflict, match="type T_ISOLATED_EFFECT"), session.begin():
        ActionQueue.enqueue_action(
            session, "SEND_EMAIL", {"to": "a@b.co", "subject": "s", "body": "b"}, "launch-2"
        )
    session.rollback()
    assert count_rows(session) == 1


def test_concurrent_enqueues_of_one_key_create_one_row(
    database_url: str, redis_client: redis.Redis
) -> None:
    make = session_factory(database_url)
    barrier = threading.Barrier(8)
    ids: list[int] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            with make() as s, s.begin():
                barrier.wait()
                ids.append(ActionQueue.enqueue_action(s, TYPE, POST, "race").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1 and len(ids) == 8
    with make() as s:
        assert count_rows(s) == 1
    assert messages(redis_client) == ids[:1]


# -- guarantee 2: transactional enqueue ---------------------------------------------------


def test_message_is_sent_only_after_commit(session: Session, redis_client: redis.Redis) -> None:
    session.begin()
    action = ActionQueue.enqueue_action(session, TYPE, POST, "tx-1")
    assert queue_length(redis_client, Q) == 0, "published before commit"
    session.commit()
    assert messages(redis_client) == [action.id]


def test_rollback_leaves_neither_row_nor_message(
    session: Session, redis_client: redis.Redis
) -> None:
    session.begin()
    ActionQueue.enqueue_action(session, TYPE, POST, "tx-2")
    session.rollback()
    assert count_rows(session) == 0
    assert queue_length(redis_client, Q) == 0


def test_crash_between_commit_and_publish_loses_nothing(
    database_url: str, redis_client: redis.Redis, session: Session
) -> None:
    get_dispatcher().broker_was_reset()  # arm the canary: the broker itself is fine here
    # A real process commits, then dies before its after-commit publish can run.
    script = """
import os
from aicmo.orchestration import queue
from aicmo.db import session_scope
import tasks  # the real app and dispatcher
queue.publish_now = lambda items: os._exit(17)
with session_scope() as s:
    queue.ActionQueue.enqueue_action(s, "T_ISOLATED_EFFECT", {"tag": "y"}, "crash-1")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert done.returncode == 17, done.stderr.decode()
    action = session.scalars(select(AOLAction).where(AOLAction.idempotency_key == "crash-1")).one()
    assert action.status == "READY"
    assert queue_length(redis_client, Q) == 0
    # Once the message is overdue by the grace period, the sweeper sends it.
    later = datetime.now(UTC) + timedelta(seconds=5)
    report = Sweeper().sweep(now=later)
    assert (report.broker_reset, report.resent) == (False, 1)
    assert messages(redis_client) == [action.id]


# -- guarantee 6: nothing long waits in Redis ---------------------------------------------


def test_action_due_in_two_hours_stays_pending_in_the_database(
    session: Session, redis_client: redis.Redis
) -> None:
    when = datetime.now(UTC) + timedelta(hours=2)
    with session.begin():
        action = ActionQueue.enqueue_action(session, TYPE, POST, "later", when)
    assert action.status == "PENDING" and action.queued_at_utc is None
    assert queue_length(redis_client, Q) == 0
    # Sweeps before it is due send nothing...
    assert Sweeper().sweep().dispatched == 0
    assert queue_length(redis_client, Q) == 0
    # ...and once it is within the horizon it goes out with a countdown under the horizon.
    report = Sweeper().sweep(now=when - timedelta(seconds=3))
    assert report.dispatched == 1
    session.expire_all()
    assert session.get(AOLAction, action.id).status == "READY"  # type: ignore[union-attr]
    [raw] = redis_client.lrange(Q, 0, -1)
    eta = datetime.fromisoformat(json.loads(raw)["headers"]["eta"])
    # The sweep ran "3 s before due" on a simulated clock: the countdown it sent is those
    # 3 s, measured from the real clock that Celery stamps.
    assert 0 < (eta - datetime.now(UTC)).total_seconds() <= 3.5


def test_no_countdown_ever_exceeds_the_horizon(session: Session, redis_client: redis.Redis) -> None:
    from aicmo.config import get_settings

    horizon = get_settings().dispatch_horizon_seconds
    with session.begin():
        for seconds in (1, horizon - 1, horizon + 1, 3600):
            ActionQueue.enqueue_action(
                session,
                TYPE,
                {**POST, "tag": str(seconds)},
                None,
                datetime.now(UTC) + timedelta(seconds=seconds),
            )
    sent = [json.loads(raw)["headers"] for raw in redis_client.lrange(Q, 0, -1)]
    assert len(sent) == 2
    now = datetime.now(UTC)
    assert all((datetime.fromisoformat(h["eta"]) - now).total_seconds() <= horizon for h in sent)


# -- guarantee 9: bad input never becomes a row -------------------------------------------


def nested(depth: int, as_dict: bool = False) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


@pytest.mark.parametrize(
    ("action_type", "payload", "error"),
    [
        ("NOPE", POST, "unknown action type"),
        (TYPE, {"tag": 5}, "tag"),
        (TYPE, {**POST, "tag": "x" * 300_000}, "over the limit"),
        (TYPE, {**POST, "tag": "bad \x00"}, "NUL"),
        # Deeper than Python's recursion limit: refused by name, not a RecursionError.
        (TYPE, {**POST, "extra": nested(50_000)}, "nested deeper than"),
        (TYPE, {**POST, "extra": nested(70, as_dict=True)}, "nested deeper than"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    session: Session, redis_client: redis.Redis, action_type: str, payload: Any, error: str
) -> None:
    with pytest.raises(ValueError, match=error), session.begin():
        ActionQueue.enqueue_action(session, action_type, payload, "bad")
    assert count_rows(session) == 0
    assert queue_length(redis_client, Q) == 0


# -- bulk ---------------------------------------------------------------------------------


def test_bulk_enqueue_is_idempotent_and_sends_only_new_actions(
    session: Session, redis_client: redis.Redis
) -> None:
    with session.begin():
        existing = ActionQueue.enqueue_action(session, TYPE, POST, "bulk-0")
    redis_client.delete(Q)
    items = [(TYPE, POST, "bulk-0")] + [
        (TYPE, {**POST, "tag": f"post {n}"}, f"bulk-{n}") for n in range(1, 500)
    ]
    with session.begin():
        result = ActionQueue.enqueue_many(session, items)
    assert [r.idempotency_key for r in result] == [key for _, _, key in items]
    assert result[0].action_id == existing.id and not result[0].created
    assert all(r.created for r in result[1:])
    assert count_rows(session) == 500
    assert sorted(messages(redis_client)) == sorted(r.action_id for r in result[1:])


def test_bulk_enqueue_is_all_or_nothing(session: Session, redis_client: redis.Redis) -> None:
    with session.begin():
        ActionQueue.enqueue_action(session, TYPE, POST, "taken")
    redis_client.delete(Q)
    good = [(TYPE, {**POST, "tag": f"{n}"}, f"ok-{n}") for n in range(10)]
    with pytest.raises(InvalidPayload, match="item 10"), session.begin():
        ActionQueue.enqueue_many(session, [*good, (TYPE, {"tag": 1.5}, "bad")])
    with pytest.raises(IdempotencyConflict), session.begin():
        ActionQueue.enqueue_many(session, [*good, (TYPE, {**POST, "tag": "no"}, "taken")])
    with pytest.raises(PayloadTooLarge), session.begin():
        ActionQueue.enqueue_many(session, [*good, (TYPE, {**POST, "tag": "x" * 300_000}, "big")])
    assert count_rows(session) == 1
    assert queue_length(redis_client, Q) == 0


def test_conflict_in_bulk_leaves_the_callers_other_writes_alone(session: Session) -> None:
    with session.begin():
        ActionQueue.enqueue_action(session, TYPE, POST, "mine")
    with session.begin():
        ActionQueue.enqueue_action(session, TYPE, {**POST, "tag": "b"}, "before")
        with pytest.raises(IdempotencyConflict):
            ActionQueue.enqueue_many(
                session,
                [(TYPE, {**POST, "tag": "new"}, "n1"), (TYPE, {**POST, "tag": "clash"}, "mine")],
            )
    keys = set(session.scalars(select(AOLAction.idempotency_key)))
    assert keys == {"mine", "before"}


def test_savepoints_inside_the_transaction_publish_nothing_early(
    session: Session, redis_client: redis.Redis
) -> None:
    session.begin()
    first = ActionQueue.enqueue_action(session, TYPE, {**POST, "tag": "sp-1"}, "sp-1")
    # enqueue_many releases a savepoint of its own; a caller's savepoint rolls back.
    ActionQueue.enqueue_many(session, [(TYPE, {**POST, "tag": "sp-2"}, "sp-2")])
    nested = session.begin_nested()
    ActionQueue.enqueue_action(session, TYPE, {**POST, "tag": "sp-3"}, "sp-3")
    nested.rollback()
    assert queue_length(redis_client, Q) == 0, "published before the commit"
    session.commit()
    keys = set(session.scalars(select(AOLAction.idempotency_key)))
    assert keys == {"sp-1", "sp-2"}
    sent = messages(redis_client)
    assert first.id in sent and len(sent) >= 2
