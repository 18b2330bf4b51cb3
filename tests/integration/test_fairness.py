"""Fairness between campaigns on real workers and Redis: a campaign's backlog beyond its fair
share is sent at the bulk priority, so another campaign's next messages overtake it.

Scaled down from the issue's 20,000 to A_BACKLOG (the mechanism does not depend on the size:
B's messages are popped before any bulk message once they are in Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from aicmo.cam.models import OutreachMessage
from aicmo.cam.orchestrator import tick
from aicmo.db import session_factory
from tests.support import campaigns as support
from tests.support.processes import CeleryProcess, wait_for, worker

pytestmark = pytest.mark.usefixtures("clean")

A_BACKLOG = 3000
B_MESSAGES = 20


@pytest.fixture
def workers(celery_app: Any, log_dir: Path) -> Iterator[list[CeleryProcess]]:
    started = [worker(log_dir, concurrency=2, extra=["-Q", "aol"]) for _ in range(2)]
    for process in started:
        process.start()
    yield started
    for process in started:
        process.stop()


def published(url: str, campaign_id: int) -> int:
    with session_factory(url)() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(OutreachMessage)
                .where(
                    OutreachMessage.campaign_id == campaign_id,
                    OutreachMessage.publish_status == "PUBLISHED",
                )
            )
            or 0
        )


def auto_campaign(url: str, n: int, prefix: str) -> int:
    cid = support.create(
        url,
        n_leads=0,
        requires_approval=False,
        batch_size=1000,
        daily_send_limit=100_000,
        steps=[{"subject": "Hi", "body": "Hello {first_name}.", "wait_minutes": 0}],
    )
    with session_factory(url)() as s, s.begin():
        from aicmo.cam import leads

        leads.capture(s, cid, "test", support.lead_dicts(n, prefix=prefix))
    return cid


def test_a_small_campaign_overtakes_a_large_backlog(
    database_url: str, workers: list[CeleryProcess]
) -> None:
    a = auto_campaign(database_url, A_BACKLOG, "a")
    b = auto_campaign(database_url, B_MESSAGES, "b")
    ticked = time.monotonic()
    for _ in range(A_BACKLOG // 1000):  # each tick queues 1,000 publishes of A
        with session_factory(database_url)() as s, s.begin():
            tick(s, a, generator=None)
    print(f"A's ticks took {time.monotonic() - ticked:.1f}s")
    assert published(database_url, a) < A_BACKLOG // 2, "the workers ate the backlog already"
    started = time.monotonic()
    with session_factory(database_url)() as s, s.begin():
        tick(s, b, generator=None)
    wait_for(
        lambda: published(database_url, b) == B_MESSAGES,
        60,
        interval=0.1,
        message="B's messages to be published",
    )
    b_seconds = time.monotonic() - started
    a_done = published(database_url, a)
    print(f"fairness: B's {B_MESSAGES} published in {b_seconds:.2f}s; A had {a_done}/{A_BACKLOG}")
    assert b_seconds < 10
    assert a_done < A_BACKLOG * 0.75, "B waited for most of A's backlog"
    # ... and the bulk share is not starved: it runs on as soon as nothing else waits.
    wait_for(
        lambda: published(database_url, a) >= a_done + 200,
        60,
        interval=0.5,
        message="A's backlog to go on after B's messages",
    )
