"""Batched dispatch: one message per batch of ids, each action with its own claim, attempts,
token, outcome and log (aicmo.orchestration.batch), on real workers, PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update

from aicmo.db import session_scope, utcnow
from aicmo.orchestration import manager
from aicmo.orchestration.dispatch import Dispatch, get_dispatcher
from aicmo.orchestration.models import AOLAction, AOLExecutionLog
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.registry import registry
from aicmo.orchestration.store import ActionStore
from aicmo.orchestration.sweeper import Sweeper
from tests.conftest import Book
from tests.support.processes import wait_for, worker

pytestmark = [pytest.mark.usefixtures("clean", "celery_app"), pytest.mark.slow]


def enqueue_many(action_type: str, payloads: list[dict[str, Any]]) -> list[int]:
    with session_scope() as s:
        done = ActionQueue.enqueue_many(s, [(action_type, p) for p in payloads])
    return [d.action_id for d in done]


def messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_enqueue_many_is_one_message_per_batch_and_each_action_keeps_its_own_record(
    book: Book, redis_client: redis.Redis, log_dir: Path
) -> None:
    # The isolated queue has no worker yet: the messages can be counted as they were sent.
    ids = enqueue_many("T_ISOLATED_EFFECT", [{"tag": f"b{i}"} for i in range(250)])
    sent = messages(redis_client, "isolated")
    assert len(sent) == 3, "250 actions, batch size 100: three messages"
    headers = [m["headers"] for m in sent]
    assert {h["task"] for h in headers} == {"aol.T_ISOLATED_EFFECT.batch"}
    assert sorted(h["argsrepr"].split(" ids")[0] for h in headers) == ["[100", "[100", "[50"]
    assert all("tag" not in h["argsrepr"] for h in headers), "Flower must never see payloads"
    with session_scope() as s:
        single = ActionQueue.enqueue_action(s, "T_ISOLATED_EFFECT", {"tag": "single"}).id
    last = messages(redis_client, "isolated")[0]["headers"]
    assert (last["task"], last["argsrepr"]) == ("aol.T_ISOLATED_EFFECT", f"[{single}]")

    process = worker(log_dir, concurrency=2, extra=["-Q", "isolated"]).start()
    try:
        book.wait_all([*ids, single], "SUCCESS", timeout=60)
    finally:
        process.stop()
    with session_scope() as s:
        rows = s.execute(
            select(AOLAction.id, AOLAction.attempts, AOLAction.claimed_by).where(
                AOLAction.id.in_(ids)
            )
        ).all()
        claimed = s.scalars(
            select(AOLExecutionLog.worker).where(
                AOLExecutionLog.action_id.in_(ids), AOLExecutionLog.event == "CLAIMED"
            )
        ).all()
    assert {attempts for _, attempts, _ in rows} == {1}
    assert len({token for _, _, token in rows}) == 250, "one fencing token per action"
    assert all(token.endswith(f"#{action_id}") for action_id, _, token in rows)
    assert sorted(claimed) == sorted(token for _, _, token in rows), "one CLAIMED row each"
    assert book.events(ids[7]) == ["CLAIMED", "SUCCEEDED"]
    effects = book.effects("b")
    assert sorted(a for _, a, _ in effects) == sorted(ids), "one effect per action, no more"


def test_a_mixed_batch_records_each_outcome_on_its_own(
    book: Book, shared_worker: Any, redis_client: redis.Redis
) -> None:
    ok, flaky, refused, dead = enqueue_many(
        "T_EFFECT",
        [
            {"tag": "mix-ok"},
            {"tag": "mix-flaky", "fail_first": 1},
            {"tag": "mix-refused", "permanent": True},
            {"tag": "mix-dead", "fail_first": 99},
        ],
    )
    assert book.wait_status(ok, "SUCCESS").attempts == 1
    assert book.wait_status(refused, "FAILED").attempts == 1
    flaky_row = book.wait_status(flaky, "SUCCESS")
    assert flaky_row.attempts == 2
    dead_row = book.wait_status(dead, "DLQ", timeout=30)
    assert dead_row.attempts == dead_row.max_attempts == 3
    assert book.events(flaky) == ["CLAIMED", "RETRY_SCHEDULED", "CLAIMED", "SUCCEEDED"]
    assert book.events(refused) == ["CLAIMED", "FAILED"]
    assert book.events(dead)[-1] == "DEAD_LETTERED"
    # The failed attempts' effect rows rolled back with them: one row per success.
    assert sorted(a for _, a, _ in book.effects("mix-")) == sorted([ok, flaky])

    # The same batch message again (a redelivery): nothing runs twice.
    get_dispatcher().publish(
        [Dispatch(i, "T_EFFECT", batchable=True) for i in (ok, flaky, refused, dead)]
    )
    wait_for(
        lambda: book.events(ok).count("SKIPPED_DUPLICATE") == 1,
        10,
        message="the redelivered batch to be skipped",
    )
    assert all(book.events(i).count("SKIPPED_DUPLICATE") == 1 for i in (flaky, refused, dead))
    assert sorted(a for _, a, _ in book.effects("mix-")) == sorted([ok, flaky])


def test_a_paused_batch_waits_and_a_not_due_member_runs_when_due(
    book: Book, shared_worker: Any, redis_client: redis.Redis
) -> None:
    with session_scope() as s:
        manager.pause(s, "T_EFFECT", reason="batch test")
    ids = enqueue_many("T_EFFECT", [{"tag": f"pz{i}"} for i in range(4)])
    wait_for(lambda: redis_client.llen("aol") == 0, 10, message="the batch to be delivered")
    time.sleep(0.5)  # taken off the list: give the worker its moment to (not) claim
    with session_scope() as s:
        s.execute(
            update(AOLAction)
            .where(AOLAction.id == ids[2])
            .values(not_before_utc=utcnow() + timedelta(seconds=2))
        )
        manager.resume(s, "T_EFFECT")
    assert all(book.events(i) == [] for i in ids), "a paused batch claims nothing"
    get_dispatcher().publish(
        [Dispatch(i, "T_EFFECT", batchable=True) for i in ids]
    )  # one batch message
    book.wait_all([ids[0], ids[1], ids[3]], "SUCCESS", timeout=10)
    assert book.action(ids[2]).status == "READY", "not due yet: left for later"
    assert book.wait_status(ids[2], "SUCCESS", timeout=15).attempts == 1
    assert sorted(a for _, a, _ in book.effects("pz")) == sorted(ids)


def test_each_finish_extends_the_waiting_leases_and_starts_the_next(
    book: Book, database_url: str
) -> None:
    """In-process: the statements themselves, with no worker (a dead batch, then the sweeper)."""
    from aicmo.db import get_engine

    ids = enqueue_many("T_ISOLATED_EFFECT", [{"tag": f"ls{i}"} for i in range(3)])
    spec = registry.get("T_ISOLATED_EFFECT")
    store = ActionStore(get_engine(database_url))
    claimed = store.claim_many(
        ids, spec.name, "probe#", lease_seconds=spec.lease_seconds(), skew_seconds=1
    )
    assert [c.id for c in claimed] == sorted(ids)
    assert store.claim_many(ids, spec.name, "other#", lease_seconds=60, skew_seconds=1) == []

    def started() -> list[bool]:
        with session_scope() as s:
            rows = s.execute(
                select(AOLAction.started_at_utc).where(AOLAction.id.in_(ids)).order_by("id")
            ).all()
        return [row[0] is not None for row in rows]

    assert started() == [True, False, False], "the claim marks only the first as started"
    from aicmo.orchestration.batch_store import Following

    with session_scope() as s:
        s.execute(
            text("UPDATE aol_actions SET lease_expires_at_utc = now() WHERE id = ANY(:i)"),
            {"i": ids},
        )
    kept = store.succeed_alone(
        claimed[0],
        "probe#" + str(claimed[0].id),
        Following("probe#", (claimed[1].id, claimed[2].id), 120.0, 100.0),
        result=None,
        now=utcnow(),
        duration_ms=1.0,
        artifact_ref=None,
        artifact_sha256=None,
    )
    assert kept and started() == [True, True, False]
    with session_scope() as s:
        leases = (
            s.execute(
                text(
                    "SELECT extract(epoch FROM lease_expires_at_utc - now()) FROM aol_actions"
                    " WHERE id = ANY(:i) AND status = 'RUNNING'"
                ),
                {"i": ids},
            )
            .scalars()
            .all()
        )
    assert len(leases) == 2 and all(110 < left <= 121 for left in leases)

    # The batch dies here: once the leases end, the started one spent its attempt, the
    # never-started one gets its attempt back.
    with session_scope() as s:
        s.execute(
            text(
                "UPDATE aol_actions SET lease_expires_at_utc = now() - interval '1 s'"
                " WHERE id = ANY(:i) AND status = 'RUNNING'"
            ),
            {"i": ids},
        )
    Sweeper().sweep()
    second, third = book.action(claimed[1].id), book.action(claimed[2].id)
    assert (second.status, second.attempts) == ("RETRY", 1)
    assert (third.status, third.attempts) == ("RETRY", 0)
