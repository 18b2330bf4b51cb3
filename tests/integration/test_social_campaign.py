"""A live campaign on email + Mastodon + Bluesky, end to end through a real worker.

Real PostgreSQL, Redis and `celery worker` (live mode) talking to a local SMTP server and
local Mastodon and Bluesky servers; the accounts are in ``social_accounts`` (encrypted). On
the way, Mastodon accepts one post and never answers (the retry must not post it twice) and
Bluesky answers one post with a 429 and a reset. Every message is posted exactly once, and
CAMPAIGN_FETCH_METRICS records each platform's numbers per post next to email's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from aicmo.cam import keys, review
from aicmo.cam.models import CampaignMetrics, OutreachMessage
from aicmo.config import Settings
from aicmo.db import session_factory
from aicmo.gateways.vault import new_key
from aicmo.ops import accounts as ops
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import BackgroundSweeper, Book
from tests.support import campaigns as support
from tests.support.fake_platforms.bluesky import FakeBluesky
from tests.support.fake_platforms.mastodon import FakeMastodon
from tests.support.fake_smtp import USERNAME, FakeSMTPServer
from tests.support.gateway_actions import ACTION_MODULES
from tests.support.processes import CeleryProcess, worker
from tests.support.social_campaign import SOCIAL_QUEUE, move_campaign_types, restore

KEY = new_key()
SMTP_PASSWORD = "smtp-pass-5678"
TERMINAL = {"SUCCESS", "FAILED", "DLQ", "CANCELLED"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smtp() -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer(SMTP_PASSWORD, security="none").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mastodon() -> Iterator[FakeMastodon]:
    fake = FakeMastodon().start()
    yield fake  # type: ignore[misc]
    fake.stop()


@pytest.fixture(scope="module")
def bluesky() -> Iterator[FakeBluesky]:
    fake = FakeBluesky().start()
    yield fake  # type: ignore[misc]
    fake.stop()


@pytest.fixture(scope="module")
def social_queue(celery_app: Any) -> Iterator[str]:
    """This process routes the campaign types to the live worker's queue, then back."""
    from tasks.config import queue

    before = move_campaign_types(SOCIAL_QUEUE)
    if SOCIAL_QUEUE not in celery_app.amqp.queues:
        celery_app.amqp.queues.add(queue(SOCIAL_QUEUE))
    yield SOCIAL_QUEUE
    restore(before)


@pytest.fixture(scope="module")
def live_worker(social_queue: str, smtp: FakeSMTPServer, log_dir: Any) -> Iterator[CeleryProcess]:
    env = {
        "AICMO_PROOF_MODE": "false",
        "AICMO_ACTION_MODULES": f"{ACTION_MODULES},tests.support.social_campaign",
        "AICMO_TEST_CAMPAIGN_QUEUE": social_queue,
        "AICMO_SMTP_HOST": "127.0.0.1",
        "AICMO_SMTP_PORT": str(smtp.port),
        "AICMO_SMTP_SECURITY": "none",
        "AICMO_SMTP_USERNAME": USERNAME,
        "AICMO_SMTP_PASSWORD": SMTP_PASSWORD,
        "AICMO_SOCIAL_ENCRYPTION_KEYS": KEY,
        "AICMO_EMAIL_TOKEN_KEYS": "test-token-key",  # live campaign mail signs its unsubscribe link
        "AICMO_SOCIAL_TIMEOUT_SECONDS": "2",
    }
    process = worker(log_dir, concurrency=2, env=env, extra=["-Q", social_queue]).start()
    yield process
    process.stop()


def connect_accounts(url: str, mastodon: FakeMastodon, bluesky: FakeBluesky) -> None:
    settings = Settings(database_url=url, social_encryption_keys=[KEY])  # type: ignore[list-item]
    with session_factory(url)() as s, s.begin():
        ops.add_account(
            s,
            {
                "platform": "mastodon",
                "handle": "@ada@fake.social",
                "base_url": mastodon.url,
                "secrets": {"access_token": "mastodon-token-ada"},
            },
            settings,
        )
        ops.add_account(
            s,
            {
                "platform": "bluesky",
                "handle": "ada.bsky.social",
                "base_url": bluesky.url,
                "secrets": {"app_password": "app-pass-ada-1234"},
            },
            settings,
        )


def steps() -> list[dict[str, Any]]:
    return [
        {
            "channel": "email",
            "subject": "Hello {first_name}",
            "body": "Hi {first_name}.",
            "wait_minutes": 0,
        },
        {"channel": "mastodon", "body": "Launch news for {company}, step 2", "wait_minutes": 0},
        {"channel": "bluesky", "body": "Launch news for {company}, step 3", "wait_minutes": 0},
    ]


def publish_round(url: str, book: Book, campaign_id: int, step: int) -> list[OutreachMessage]:
    """Tick, approve the drafts of this step, wait for every publish to finish."""
    book.wait_status(support.enqueue_tick(url, campaign_id), "SUCCESS", timeout=60)
    drafts = [m.id for m in support.messages(url, campaign_id) if m.step == step]
    assert len(drafts) == 3, support.messages(url, campaign_id)
    with session_factory(url)() as s, s.begin():
        review.approve_many(s, drafts, "ada")
    actions = [a.id for a in support.actions(url, keys.PUBLISH)]
    book.wait_all(actions, TERMINAL, timeout=90)
    return [m for m in support.messages(url, campaign_id) if m.step == step]


@pytest.fixture
def sweeping(social_queue: str) -> Iterator[None]:
    """The real sweeper, as beat runs it: a retry due beyond the dispatch horizon waits in
    the database and only the sweeper sends it."""
    with BackgroundSweeper(interval=0.5):
        yield


@pytest.mark.usefixtures("clean", "sweeping")
def test_email_mastodon_bluesky_campaign_posts_each_message_once_and_records_metrics(
    database_url: str,
    book: Book,
    live_worker: CeleryProcess,
    smtp: FakeSMTPServer,
    mastodon: FakeMastodon,
    bluesky: FakeBluesky,
) -> None:
    connect_accounts(database_url, mastodon, bluesky)
    cid = support.create(
        database_url,
        n_leads=3,
        mode="live",
        timezone="UTC",
        channels=["email", "mastodon", "bluesky"],
        steps=steps(),
    )
    mail_before = len(smtp.received)

    emails = publish_round(database_url, book, cid, 1)
    assert {m.publish_status for m in emails} == {"PUBLISHED"}
    assert len(smtp.received) - mail_before == 3

    # Mastodon takes the first post and never answers: the action retries with its key.
    mastodon.hang_once_after_accepting("POST", "/api/v1/statuses")
    toots = publish_round(database_url, book, cid, 2)
    assert {m.publish_status for m in toots} == {"PUBLISHED"}, [m.error for m in toots]
    assert len(mastodon.seen("POST", "/api/v1/statuses")) == 4  # 3 posts + 1 retry
    for message in toots:
        [status] = mastodon.posts_with(message.body)
        assert status["id"] == message.external_id

    # Bluesky says 429 once, with a reset two seconds away.
    bluesky.queue("POST", "/xrpc/com.atproto.repo.createRecord", bluesky.rate_limited(2))
    skeets = publish_round(database_url, book, cid, 3)
    assert {m.publish_status for m in skeets} == {"PUBLISHED"}, [m.error for m in skeets]
    for message in skeets:
        [record] = bluesky.posts_with(message.body)
        assert record["uri"] == message.external_id
    assert len(bluesky.seen("POST", "/xrpc/com.atproto.server.createSession")) == 1
    retried = [a for a in support.actions(database_url, keys.PUBLISH) if a.attempts > 1]
    assert len(retried) == 2  # the hung toot and the rate-limited skeet, once each
    assert all(a.status == "SUCCESS" for a in support.actions(database_url, keys.PUBLISH))

    for i, message in enumerate(toots):
        mastodon.engage(str(message.external_id), favourites=i + 1, reblogs=1, replies=0)
    for message in skeets:
        bluesky.engage(str(message.external_id), likes=2, reposts=1, replies=1)
    today = datetime.now(UTC).date()
    with session_factory(database_url)() as s, s.begin():
        fetch = ActionQueue.enqueue_action(
            s,
            keys.FETCH_METRICS,
            {"campaign_id": cid, "date": today.isoformat()},
            keys.metrics_key(cid, today),
        ).id
    book.wait_status(fetch, "SUCCESS", timeout=60)

    with session_factory(database_url)() as s:
        row = s.scalars(
            select(CampaignMetrics).where(
                CampaignMetrics.campaign_id == cid, CampaignMetrics.metric_date == today
            )
        ).one()
    assert row.messages_published == 9
    assert row.by_channel["mastodon"]["published"] == 3
    masto = row.external["mastodon"]
    assert masto["metrics"] == {"posts": 3.0, "favourites": 6.0, "reblogs": 3.0, "replies": 0.0}
    assert set(masto["posts"]) == {m.external_id for m in toots}
    sky = row.external["bluesky"]
    assert sky["metrics"] == {
        "posts": 3.0,
        "likes": 6.0,
        "reposts": 3.0,
        "replies": 3.0,
        "quotes": 0.0,
    }
    assert set(sky["posts"]) == {m.external_id for m in skeets}
    assert row.external["email"]["source"] == "unconfigured"
    # A revoked account loses its channel's numbers, not the day's counts nor the others'.
    mastodon.revoked.add("mastodon-token-ada")
    with session_factory(database_url)() as s, s.begin():
        again = ActionQueue.enqueue_action(
            s,
            keys.FETCH_METRICS,
            {"campaign_id": cid, "date": today.isoformat()},
            f"{keys.metrics_key(cid, today)}:again",
        ).id
    book.wait_status(again, "SUCCESS", timeout=60)
    with session_factory(database_url)() as s:
        row = s.scalars(
            select(CampaignMetrics).where(
                CampaignMetrics.campaign_id == cid, CampaignMetrics.metric_date == today
            )
        ).one()
    assert row.messages_published == 9
    assert row.external["mastodon"]["source"] == "failed"
    assert "The access token was revoked" in row.external["mastodon"]["error"]
    assert row.external["bluesky"]["metrics"]["likes"] == 6.0
    # No secret reached a log line of the worker.
    for secret in ("mastodon-token-ada", "app-pass-ada-1234", SMTP_PASSWORD, KEY):
        assert secret not in live_worker.log()
