"""Property-style: seeded random interleavings of ticks, approvals, hand-made publishes,
replays and keyed actions, run by several threads at once on PostgreSQL (each with its own
executor and connections, as worker processes have), bounded in size. Whatever the order,
no limit is ever exceeded: the daily send limit per campaign, the per-person frequency caps
across campaigns, and the concurrency limit per key (watched from outside while it runs)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from aicmo.cam import keys, leads, review
from aicmo.cam.clock import today_bounds
from aicmo.cam.models import Campaign, Lead, OutreachMessage
from aicmo.cam.orchestrator import tick
from aicmo.config import reload_settings
from aicmo.db import session_factory
from aicmo.orchestration import manager
from aicmo.orchestration.errors import AOLError
from aicmo.orchestration.executor import Executor
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from tests.integration.test_concurrency_keys import RunningWatch
from tests.support import campaigns as support
from tests.support.actions import KEYED_LIMIT

pytestmark = pytest.mark.usefixtures("clean")

THREADS = 4
STEPS = 25  # operations per thread
PEOPLE = [f"person{i}@example.com" for i in range(6)]


@pytest.fixture
def caps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AICMO_CAM_FREQUENCY_CAPS", "1/24h,3/7d")
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


def _world(url: str, rng: random.Random) -> list[int]:
    cids = []
    for n in range(3):
        cid = support.create(url, n_leads=0, daily_send_limit=rng.randint(1, 4), name=f"c{n}")
        people = rng.sample(PEOPLE, 4)  # campaigns share people
        with session_factory(url)() as s, s.begin():
            leads.capture(s, cid, "test", [{"email": p} for p in people])
        cids.append(cid)
    return cids


def _operations(
    url: str, cids: list[int], executor: Executor
) -> list[Callable[[random.Random], Any]]:
    def do_tick(rng: random.Random) -> None:
        with session_factory(url)() as s, s.begin():
            tick(s, rng.choice(cids), generator=None)

    def approve(rng: random.Random) -> None:
        # One campaign per call, as the review page does: approve_many over several campaigns
        # locks them in the order given, and two such calls can deadlock (reported, issue 15).
        with session_factory(url)() as s:
            drafts = list(
                s.scalars(
                    select(OutreachMessage.id).where(
                        OutreachMessage.publish_status == "DRAFT",
                        OutreachMessage.campaign_id == rng.choice(cids),
                    )
                )
            )
        if drafts:
            chosen = rng.sample(drafts, min(len(drafts), rng.randint(1, 3)))
            with session_factory(url)() as s, s.begin():
                review.approve_many(s, chosen, "p")

    def publish_by_hand(rng: random.Random) -> None:
        # A replay, a caller or a stale retry: a publish for any message, any moment.
        with session_factory(url)() as s:
            ids = list(s.scalars(select(OutreachMessage.id)))
        if not ids:
            return
        mid = rng.choice(ids)
        with session_factory(url)() as s, s.begin():
            action = ActionQueue.enqueue_action(
                s, keys.PUBLISH, {"message_id": mid}, f"hand:{mid}:{rng.randint(0, 2)}"
            )
        executor.run(action.id, keys.PUBLISH)

    def run_waiting(rng: random.Random) -> None:
        with session_factory(url)() as s:
            ids = list(
                s.scalars(
                    select(AOLAction.id).where(
                        AOLAction.action_type == keys.PUBLISH,
                        AOLAction.status.in_(["READY", "RETRY"]),
                    )
                )
            )
        if ids:
            action_id = rng.choice(ids)
            with session_factory(url)() as s, s.begin():  # due now, as the sweeper would
                s.execute(
                    text("UPDATE aol_actions SET not_before_utc = now() WHERE id = :i"),
                    {"i": action_id},
                )
            executor.run(action_id, keys.PUBLISH)

    def replay(rng: random.Random) -> None:
        with session_factory(url)() as s:
            ids = list(
                s.scalars(select(AOLAction.id).where(AOLAction.status.in_(["FAILED", "DLQ"])))
            )
        if ids:
            try:
                with session_factory(url)() as s, s.begin():
                    manager.replay(s, rng.choice(ids), by="property")
            except AOLError:
                pass  # another thread replayed it first

    def keyed(rng: random.Random) -> None:
        account = rng.choice("ab")
        with session_factory(url)() as s, s.begin():
            action = ActionQueue.enqueue_action(
                s, "T_KEYED", {"account": account, "sleep": 0.05, "tag": str(rng.random())}
            )
        executor.run(action.id, "T_KEYED")

    return [do_tick, approve, publish_by_hand, run_waiting, replay, keyed]


def _check_limits(url: str) -> None:
    now = datetime.now(UTC)
    with session_factory(url)() as s:
        for campaign in s.scalars(select(Campaign)):
            start, end = today_bounds(now, campaign.timezone)
            sent = s.scalar(
                select(text("count(*)"))
                .select_from(OutreachMessage)
                .where(
                    OutreachMessage.campaign_id == campaign.id,
                    OutreachMessage.published_at_utc >= start,
                    OutreachMessage.published_at_utc < end,
                )
            )
            assert sent <= campaign.daily_send_limit, f"campaign {campaign.id} daily limit"
        published = s.execute(
            select(Lead.email, OutreachMessage.published_at_utc)
            .join(Lead, Lead.id == OutreachMessage.lead_id)
            .where(OutreachMessage.publish_status == "PUBLISHED")
        ).all()
    per_day = Counter(email for email, at in published if at > now - timedelta(hours=24))
    assert all(n <= 1 for n in per_day.values()), f"1 per 24h exceeded: {per_day}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleavings_never_exceed_a_limit(
    database_url: str, caps: None, seed: int
) -> None:
    rng = random.Random(seed)
    cids = _world(database_url, rng)
    watch = RunningWatch(database_url)
    errors: list[BaseException] = []

    def thread_body(n: int) -> None:
        local = random.Random(seed * 100 + n)
        ops = _operations(database_url, cids, Executor(worker=f"prop{n}"))
        try:
            for _ in range(STEPS):
                local.choice(ops)(local)
        except BaseException as exc:
            errors.append(exc)

    with support.recording_dispatcher():
        watch.start()
        threads = [threading.Thread(target=thread_body, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        watch.stop.set()
        watch.join(5)
    assert not errors, errors
    assert all(count <= KEYED_LIMIT for count in watch.most.values()), watch.most
    _check_limits(database_url)
    with session_factory(database_url)() as s:  # the limits were really put to the test
        published = s.scalar(
            text("SELECT count(*) FROM cam_outreach_messages WHERE publish_status = 'PUBLISHED'")
        )
        refused = s.scalar(
            text(
                "SELECT count(*) FROM aol_execution_logs WHERE error LIKE '%FrequencyCapped%'"
                " OR error LIKE '%DailyLimitReached%' OR error LIKE '%review gate%'"
            )
        )
        keyed = s.scalar(text("SELECT count(*) FROM aol_actions WHERE action_type = 'T_KEYED'"))
    print(f"seed {seed}: {published} published, {refused} refusals, {keyed} keyed, {watch.most}")
    assert published > 0 and refused > 0
