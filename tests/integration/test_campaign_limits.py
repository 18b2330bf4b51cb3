"""The daily send limit under concurrent publishes: real worker processes on PostgreSQL and
Redis, sending through a real (slow) SMTP server, so many publishes of one campaign are
between their admission and their record at the same moment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicmo.cam import keys, review
from aicmo.cam.orchestrator import tick
from aicmo.db import session_factory
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support import campaigns as support
from tests.support.fake_smtp import FakeSMTPServer
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = pytest.mark.usefixtures("clean")

LIMIT = 3
MESSAGES = 12
WORKERS = 3  # processes, 2 pool children each: 6 publishes at once


@pytest.fixture
def slow_smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer("unused", data_delay_seconds=2.0).start()
    yield server
    server.stop()


@pytest.fixture
def live_workers(
    celery_app: Any, log_dir: Path, slow_smtp: FakeSMTPServer
) -> Iterator[list[CeleryProcess]]:
    env = {
        "AICMO_PROOF_MODE": "false",
        "AICMO_SMTP_HOST": "127.0.0.1",
        "AICMO_SMTP_PORT": str(slow_smtp.port),
        "AICMO_SMTP_SECURITY": "none",
        # Live campaign mail carries signed unsubscribe links (aicmo.cam.outcomes.tokens).
        "AICMO_EMAIL_TOKEN_KEYS": "test-token-key",
    }
    started = [worker(log_dir, concurrency=2, env=env, extra=["-Q", "aol"]) for _ in range(WORKERS)]
    for process in started:
        process.start()
    yield started
    for process in started:
        process.stop()


def test_concurrent_publishes_of_one_campaign_never_exceed_its_daily_limit(
    database_url: str, book: Book, slow_smtp: FakeSMTPServer, live_workers: list[CeleryProcess]
) -> None:
    cid = support.create(database_url, n_leads=MESSAGES, mode="live", daily_send_limit=LIMIT)
    with session_factory(database_url)() as s, s.begin():
        tick(s, cid, generator=None)
    ids = [m.id for m in support.messages(database_url, cid)]
    with session_factory(database_url)() as s, s.begin():
        queued = [r for r in review.approve_many(s, ids, "ada") if r.queued]
    assert len(queued) == LIMIT  # queueing reserved the day's room (they are sending now) ...
    # ... but publishes also come from replays and from callers enqueueing by hand: the
    # publish-time admission is what must hold, with all of them racing at once.
    with session_factory(database_url)() as s, s.begin():
        actions = [
            ActionQueue.enqueue_action(s, keys.PUBLISH, {"message_id": mid}, keys.publish_key(mid))
            for mid in ids
        ]
    action_ids = [a.id for a in actions]

    def settled() -> bool:
        found = [book.action(i) for i in action_ids]
        return all(
            a.status == "SUCCESS"
            or (a.status == "RETRY" and "DailyLimitReached" in (a.last_error or ""))
            for a in found
        )

    wait_for(settled, 90, interval=0.2, message="every publish to send or wait for tomorrow")
    statuses = book.statuses(action_ids)
    assert sorted(statuses.values()) == ["RETRY"] * (MESSAGES - LIMIT) + ["SUCCESS"] * LIMIT
    assert support.statuses(database_url, cid)["PUBLISHED"] == LIMIT
    # Sent by these live workers (a proof-mode worker another test left on the queue may have
    # taken a few: those wrote an artifact instead, and count in the SUCCESS above).
    assert len(slow_smtp.received) <= LIMIT
