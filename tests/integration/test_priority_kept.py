"""A bulk action's broker priority is kept on its row and used by every later message: the
sweeper's re-send of a lost message, a replay, a retry out of a batch (checked on a real
worker with ``celery inspect scheduled``), a concurrency wake-up. Real PostgreSQL and Redis;
the isolated queue, which only a test's own worker consumes, so the messages stay where the
test can read them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import select, update

from aicmo.cli import main
from aicmo.db import session_scope, utcnow
from aicmo.orchestration import manager
from aicmo.orchestration.dispatch import BULK_PRIORITY
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from aicmo.orchestration.sweeper import Sweeper
from tests.conftest import Book
from tests.support.actions import ISOLATED
from tests.support.messages import message_ids
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = pytest.mark.usefixtures("clean", "celery_app")

SEP = "\x06\x16"  # kombu's Redis transport: "<queue><SEP><step>" holds one priority step
BULK_LIST = f"{ISOLATED}{SEP}{BULK_PRIORITY}"


def lists(client: redis.Redis) -> tuple[list[int], list[int]]:
    """The action ids waiting at priority 0 and at the bulk priority."""
    return message_ids(client, ISOLATED), message_ids(client, BULK_LIST)


def lose_messages(client: redis.Redis, ids: list[int]) -> None:
    """A Redis loss: the messages go, and the rows say they were sent long ago."""
    client.delete(ISOLATED, BULK_LIST)
    with session_scope() as s:
        s.execute(
            update(AOLAction)
            .where(AOLAction.id.in_(ids))
            .values(queued_at_utc=utcnow() - timedelta(hours=1))
        )


def enqueue_bulk(n: int, tag: str, action_type: str = "T_SLOW_EFFECT", **payload: Any) -> list[int]:
    with session_scope() as s:
        done = ActionQueue.enqueue_many(
            s,
            [(action_type, {"tag": f"{tag}-{i}", **payload}) for i in range(n)],
            priority=BULK_PRIORITY,
        )
    return [e.action_id for e in done]


def test_the_sweepers_resend_and_a_replay_go_at_the_rows_priority(
    redis_client: redis.Redis,
) -> None:
    bulk = enqueue_bulk(3, "bulk")
    with session_scope() as s:
        single = ActionQueue.enqueue_many(s, [("T_SLOW_EFFECT", {"tag": "normal"})])[0].action_id
        stored = dict(s.execute(select(AOLAction.id, AOLAction.priority)).all())
    assert stored == {**dict.fromkeys(bulk, BULK_PRIORITY), single: None}
    shown = CliRunner().invoke(main, ["actions", "show", str(bulk[0]), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["priority"] == BULK_PRIORITY
    assert lists(redis_client) == ([single], bulk)

    lose_messages(redis_client, [*bulk, single])
    assert lists(redis_client) == ([], [])
    Sweeper().sweep()
    normal, behind = lists(redis_client)
    assert (normal, sorted(behind)) == ([single], bulk)

    redis_client.delete(ISOLATED, BULK_LIST)
    with session_scope() as s:
        s.execute(update(AOLAction).where(AOLAction.id.in_(bulk)).values(status="FAILED"))
    with session_scope() as s:
        assert sorted(manager.replay_many(s, bulk)) == bulk
    assert lists(redis_client) == ([], bulk)


@pytest.fixture
def isolated_worker(log_dir: Path) -> Iterator[CeleryProcess]:
    process = worker(log_dir, concurrency=1, extra=["-Q", ISOLATED])
    process.start()
    yield process
    process.stop()


def test_a_retry_out_of_a_bulk_batch_keeps_the_bulk_priority(
    book: Book, celery_app: Any, isolated_worker: CeleryProcess
) -> None:
    # Two in one batch message at the bulk priority; each fails its first attempt, and its
    # retry (a message of its own, 6 s off) waits on the worker's ETA timer meanwhile.
    ids = enqueue_bulk(2, "retry", fail_first=1, action_type="T_SLOW_RETRY")
    scheduled: dict[int, Any] = {}

    def both_retries_scheduled() -> bool:
        replies = celery_app.control.inspect(timeout=1.0).scheduled() or {}
        for entries in replies.values():
            for entry in entries:
                scheduled[entry["request"]["args"][0]] = entry["request"]["delivery_info"]
        return set(scheduled) == set(ids)

    wait_for(both_retries_scheduled, timeout=30, interval=0.2)
    assert {info["priority"] for info in scheduled.values()} == {BULK_PRIORITY}
    for action_id in ids:
        assert book.wait_status(action_id, "SUCCESS").attempts == 2


def test_a_woken_concurrency_waiter_goes_at_its_rows_priority(database_url: str) -> None:
    """In this process: two bulk T_KEYED actions hold their account's two slots, a third
    parks; the release that wakes it sends it at the bulk priority."""
    from tests.integration.test_concurrency_keys import KeyedSlots
    from tests.support.campaigns import recording_dispatcher

    slots = KeyedSlots(database_url)
    with recording_dispatcher(), session_scope() as s:
        items = [("T_KEYED", {"account": "p"}, f"keyed-{i}") for i in range(3)]
        ids = [e.action_id for e in ActionQueue.enqueue_many(s, items, priority=BULK_PRIORITY)]

    with recording_dispatcher():
        slots.claim_first(ids[0])
        assert [slots.claim(i).claimed is not None for i in ids[1:]] == [True, False]
    with recording_dispatcher() as sent:
        slots.release(ids[0])
    assert [(item.action_id, item.priority) for item in sent.sent] == [(ids[2], BULK_PRIORITY)]
