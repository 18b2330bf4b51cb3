"""WebhookSocialPoster against a real local HTTP server: directly, and as POST_SOCIAL's handler
run by a real live-mode worker (success, 429 + Retry-After, 500, a server that never answers,
bad credentials)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicmo.config import Settings
from aicmo.gateways.errors import BadCredentials, GatewayPermanentError, GatewayTransientError
from aicmo.gateways.factory import social_poster
from aicmo.gateways.ports import SocialPost
from aicmo.gateways.webhook import SIGNATURE_HEADER, WebhookSocialPoster, verify_signature
from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.errors import RealRunUnconfigured
from aicmo.orchestration.models import AOLExecutionLog
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support.fake_http import FakeHTTPServer
from tests.support.gateway_actions import (
    GATEWAYS_QUEUE,
    live_worker_env,
    route_gateways_queue,
)
from tests.support.processes import CeleryProcess, worker

pytestmark = pytest.mark.usefixtures("clean")

TOKEN = "hook-token-4f1c9a7e2b"
SECRET = "hmac-secret-77d0c2e91a"
TIMEOUT = 1.5


@pytest.fixture(scope="module")
def server() -> Iterator[FakeHTTPServer]:
    fake = FakeHTTPServer().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh(server: FakeHTTPServer) -> None:
    server.clear()


@pytest.fixture(scope="module")
def live_worker(server: FakeHTTPServer, celery_app: Any, log_dir: Path) -> Iterator[CeleryProcess]:
    """One live-mode worker process with a single slot (-c 1), posting to the fake server."""
    route_gateways_queue(celery_app)
    env = live_worker_env(
        social_webhook_urls=json.dumps({"ok": f"{server.url}/hooks/ok", "*": f"{server.url}/any"}),
        social_webhook_token=TOKEN,
        social_webhook_secret=SECRET,
        social_timeout_seconds=str(TIMEOUT),
        social_connect_timeout_seconds="1",
        social_requests_per_minute="6000",
        social_burst="100",
    )
    process = worker(log_dir, concurrency=1, env=env, extra=["-Q", GATEWAYS_QUEUE]).start()
    yield process
    process.stop()


def poster(server: FakeHTTPServer, timeout: float = TIMEOUT) -> WebhookSocialPoster:
    return WebhookSocialPoster(
        "ok",
        f"{server.url}/hooks/ok",
        secret=SECRET,
        token=TOKEN,
        timeout=timeout,
        connect_timeout=1,
    )


def enqueue(session: Session, content: str, key: str, platform: str = "ok") -> int:
    with session.begin():
        action = ActionQueue.enqueue_action(
            session, "T_GW_POST", {"social_platform": platform, "content": content}, key
        )
    return action.id


# -- the gateway, called directly ----------------------------------------------------------


def test_post_sends_json_with_idempotency_key_signature_and_token(server: FakeHTTPServer) -> None:
    result = poster(server).post(SocialPost("ok", "We launched!", "founders"), "launch-1")

    [seen] = server.seen("/hooks/ok")
    assert result.external_id == "post-1" and result.accepted
    assert seen.headers["idempotency-key"] == "launch-1"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json() == {
        "platform": "ok",
        "content": "We launched!",
        "audience": "founders",
        "idempotency_key": "launch-1",
    }
    signature = seen.headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(SECRET, signature, seen.body)
    assert not verify_signature(SECRET, signature, seen.body.replace(b"launched", b"LAUNCHED"))
    assert not verify_signature("another-secret", signature, seen.body)
    assert not verify_signature(SECRET, signature, seen.body, now=time.time() + 3600)


@pytest.mark.parametrize(
    ("directive", "error", "retry_after", "text"),
    [
        ("@@429:7@@", GatewayTransientError, 7.0, "HTTP 429: slow down"),
        ("@@500@@", GatewayTransientError, None, "HTTP 500: internal error"),
        ("@@401@@", BadCredentials, None, "credentials refused (HTTP 401"),
        ("@@400@@", GatewayPermanentError, None, "HTTP 400: content is too long"),
    ],
)
def test_http_answers_are_classified(
    server: FakeHTTPServer,
    directive: str,
    error: type[Exception],
    retry_after: float | None,
    text: str,
) -> None:
    with pytest.raises(error) as raised:
        poster(server).post(SocialPost("ok", f"hello {directive}"), "k-1")
    assert type(raised.value) is error
    assert getattr(raised.value, "retry_after", None) == retry_after
    assert text in str(raised.value)
    assert TOKEN not in str(raised.value)  # the 401 body echoes it


def test_a_server_that_never_answers_ends_at_the_timeout(server: FakeHTTPServer) -> None:
    started = time.monotonic()
    with pytest.raises(GatewayTransientError, match="timed out after 1s"):
        poster(server, timeout=1.0).post(SocialPost("ok", "@@hang@@"), "k-hang")
    assert 0.9 <= time.monotonic() - started < 2.5


def test_a_refused_connection_is_transient() -> None:
    dead = WebhookSocialPoster("ok", "http://127.0.0.1:9/hook", timeout=2, connect_timeout=1)
    with pytest.raises(GatewayTransientError, match="network error"):
        dead.post(SocialPost("ok", "x"), "k-dead")


def test_live_mode_without_a_url_for_the_platform_is_unconfigured(tmp_path: Path) -> None:
    artifacts = ArtifactWriter(tmp_path, "POST_SOCIAL", "k")
    settings = Settings(social_webhook_urls={"linkedin": "https://hooks.example/li"})
    assert isinstance(social_poster("linkedin", False, artifacts, settings), WebhookSocialPoster)
    with pytest.raises(RealRunUnconfigured, match="'tiktok'"):
        social_poster("tiktok", False, artifacts, settings)


# -- through a real live-mode worker -------------------------------------------------------


def test_action_posts_once_with_its_idempotency_key(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    action_id = enqueue(session, "Launch day", "wh-ok-1")
    done = book.wait_status(action_id, "SUCCESS", timeout=15)
    [seen] = server.seen("/hooks/ok")
    assert done.result_json["external_id"] == "post-1"
    assert done.result_json["proof_mode"] is False
    assert seen.headers["idempotency-key"] == "wh-ok-1"
    assert verify_signature(SECRET, seen.headers["x-aicmo-signature"], seen.body)


def test_429_goes_to_retry_due_after_retry_after(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    action_id = enqueue(session, "busy @@429:40@@", "wh-429")
    action = book.wait_status(action_id, "RETRY", timeout=15)
    assert action.attempts == 1
    assert "HTTP 429" in (action.last_error or "")
    # The provider's 40 s, not the type's 1 s backoff: both times come from one `now`.
    assert (action.not_before_utc - action.updated_at_utc).total_seconds() == pytest.approx(40)


def test_500_retries_with_backoff_and_the_same_key_then_dead_letters(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    action_id = enqueue(session, "broken @@500@@", "wh-500")
    first = book.wait_status(action_id, "RETRY", timeout=15)
    assert (first.not_before_utc - first.updated_at_utc).total_seconds() == pytest.approx(1.0)
    assert "HTTP 500" in (first.last_error or "")
    dead = book.wait_status(action_id, "DLQ", timeout=15)
    assert dead.attempts == 3
    keys = [seen.headers["idempotency-key"] for seen in server.seen("/hooks/ok")]
    assert keys == ["wh-500"] * 3


def test_a_flaky_provider_succeeds_on_retry(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    action_id = enqueue(session, "flaky @@flaky:1@@", "wh-flaky")
    done = book.wait_status(action_id, "SUCCESS", timeout=15)
    assert done.attempts == 2
    events = [e for e in book.events(action_id) if e in {"CLAIMED", "RETRY_SCHEDULED", "SUCCEEDED"}]
    assert events == ["CLAIMED", "RETRY_SCHEDULED", "CLAIMED", "SUCCEEDED"]
    assert [s.headers["idempotency-key"] for s in server.seen("/hooks/ok")] == ["wh-flaky"] * 2


def test_a_hanging_server_times_out_to_retry_and_frees_the_worker(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    hanging = enqueue(session, "@@hang@@", "wh-hang")
    following = enqueue(session, "next one", "wh-after-hang")
    started = time.monotonic()
    retry = book.wait_status(hanging, "RETRY", timeout=15)
    done = book.wait_status(following, "SUCCESS", timeout=15)
    # One slot (-c 1): the second action ran only because the first let go at its timeout.
    assert time.monotonic() - started < TIMEOUT + 4
    assert f"timed out after {TIMEOUT:g}s" in (retry.last_error or "")
    with Session(session.get_bind()) as s:
        durations = list(
            s.scalars(
                select(AOLExecutionLog.duration_ms).where(
                    AOLExecutionLog.action_id == hanging, AOLExecutionLog.event == "RETRY_SCHEDULED"
                )
            )
        )
    assert durations and TIMEOUT * 1000 * 0.95 <= durations[0] <= TIMEOUT * 1000 + 2000
    assert done.started_at_utc >= retry.updated_at_utc


def test_bad_credentials_fail_at_once_without_retry(
    live_worker: CeleryProcess, session: Session, book: Book, server: FakeHTTPServer
) -> None:
    action_id = enqueue(session, "@@401@@", "wh-401")
    failed = book.wait_status(action_id, "FAILED", timeout=15)
    assert failed.attempts == 1
    assert "credentials refused (HTTP 401" in (failed.last_error or "")
    assert TOKEN not in (failed.last_error or "")
    time.sleep(1.5)  # longer than the type's first backoff: a retry would have come by now
    assert len(server.seen("/hooks/ok")) == 1
    assert book.action(action_id).status == "FAILED"
