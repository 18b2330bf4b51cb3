"""No secret - LLM API key, SMTP password, webhook token, HMAC key, the hook URL itself - ever
appears in the worker's log, in ``last_error``, in the execution log or in the task events
Flower shows, even when providers fail and echo the credentials back.

Real actions run through a real live-mode worker (logging at DEBUG) against real local
servers that answer 401/535 with the credentials they were given in the error text.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support.fake_http import FakeHTTPServer
from tests.support.fake_smtp import USERNAME, FakeSMTPServer
from tests.support.gateway_actions import GATEWAYS_QUEUE, live_worker_env, route_gateways_queue
from tests.support.processes import worker

pytestmark = pytest.mark.usefixtures("clean")

API_KEY = "sk-secret-llm-key-0b5d9e2c8f41"
SMTP_PASSWORD = "smtp-secret-pass-6a2f0c9e"
WEBHOOK_TOKEN = "hook-secret-token-9d3b7e1a"
HMAC_SECRET = "hmac-secret-key-2c8e4f6a"
HOOK_PATH = "/hooks/catch/123/path-secret-5e7a9c1b/"
SECRETS = [API_KEY, SMTP_PASSWORD, WEBHOOK_TOKEN, HMAC_SECRET, HOOK_PATH]


class EventTap:
    """Everything published on the run's Celery event channels (what Flower consumes)."""

    def __init__(self, client: redis.Redis) -> None:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"/{db}.celeryev*")
        self.raw: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            data = message["data"]
            raw = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
            self.raw.append(raw)
            envelope = json.loads(raw)
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body).decode()
            self.raw.append(body)
            decoded = json.loads(body)
            self.events += decoded if isinstance(decoded, list) else [decoded]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.pubsub.close()


@pytest.fixture
def servers() -> Iterator[tuple[FakeHTTPServer, FakeSMTPServer]]:
    http = FakeHTTPServer().start()
    # The server's password is not the one the worker is configured with: every login fails,
    # and the server's 535 reply echoes the password it was given.
    smtp = FakeSMTPServer("the-right-password", security="none").start()
    yield http, smtp
    http.stop()
    smtp.stop()


def test_no_secret_reaches_logs_errors_or_task_events(
    servers: tuple[FakeHTTPServer, FakeSMTPServer],
    celery_app: Any,
    log_dir: Path,
    session: Session,
    book: Book,
    redis_client: redis.Redis,
) -> None:
    http, smtp = servers
    route_gateways_queue(celery_app)
    env = live_worker_env(
        social_webhook_urls=json.dumps({"*": f"{http.url}{HOOK_PATH}"}),
        social_webhook_token=WEBHOOK_TOKEN,
        social_webhook_secret=HMAC_SECRET,
        social_timeout_seconds="2",
        smtp_host="127.0.0.1",
        smtp_port=str(smtp.port),
        smtp_security="none",
        smtp_username=USERNAME,
        smtp_password=SMTP_PASSWORD,
        smtp_timeout_seconds="5",
        llm_base_url=f"{http.url}/v1",
        llm_api_key=API_KEY,
        llm_timeout_seconds="2",
        llm_max_retries="0",
        log_level="DEBUG",
    )
    tap = EventTap(redis_client)
    process = worker(log_dir, concurrency=1, env=env, extra=["-Q", GATEWAYS_QUEUE, "-l", "DEBUG"])
    process.start()
    try:
        with session.begin():
            ids = {
                key: ActionQueue.enqueue_action(session, action_type, payload, key).id
                for key, action_type, payload in [
                    ("s-post-ok", "T_GW_POST", {"social_platform": "li", "content": "hi"}),
                    ("s-post-401", "T_GW_POST", {"social_platform": "li", "content": "@@401@@"}),
                    ("s-post-500", "T_GW_POST", {"social_platform": "li", "content": "@@500@@"}),
                    ("s-mail", "T_GW_EMAIL", {"to": "a@example.com", "subject": "s", "body": "b"}),
                    ("s-llm-ok", "T_GW_LLM", {"prompt": "hello"}),
                    ("s-llm-401", "T_GW_LLM", {"prompt": "@@401@@"}),
                ]
            }
        book.wait_status(ids["s-post-ok"], "SUCCESS")
        book.wait_status(ids["s-llm-ok"], "SUCCESS")
        post_401 = book.wait_status(ids["s-post-401"], "FAILED")
        mail = book.wait_status(ids["s-mail"], "FAILED")
        llm_401 = book.wait_status(ids["s-llm-401"], "FAILED")
        book.wait_status(ids["s-post-500"], "DLQ", timeout=30)
    finally:
        process.stop()
        tap.close()

    # The failures really did carry the secrets, masked: the redaction was needed.
    assert "credentials refused (HTTP 401" in (post_401.last_error or "")
    assert "Bearer ***" in (post_401.last_error or "") and "at ***" in (post_401.last_error or "")
    assert "SMTP 535" in (mail.last_error or "") and "bad password ***" in (mail.last_error or "")
    assert "Incorrect API key: Bearer ***" in (llm_401.last_error or "")

    log = process.log()
    assert "s-post-500" in log or str(ids["s-post-500"]) in log  # the log is the worker's
    with session.bind.connect() as conn:  # type: ignore[union-attr]
        actions = conn.execute(text("SELECT row_to_json(a)::text FROM aol_actions a")).scalars()
        logs = conn.execute(text("SELECT row_to_json(l)::text FROM aol_execution_logs l")).scalars()
        database = "\n".join([*actions, *logs])
    assert "credentials refused" in database

    task_events = [e for e in tap.events if str(e.get("type", "")).startswith("task-")]
    received = [e for e in task_events if e["type"] == "task-received"]
    assert len(received) >= len(ids), "the tap saw the task events Flower would"
    # Flower shows a task's arguments: only the action id.
    assert {e["args"] for e in received} <= {f"[{i}]" for i in ids.values()} | {
        f"({i},)" for i in ids.values()
    }

    for secret in SECRETS:
        assert secret not in log, f"{secret!r} in the worker log"
        assert secret not in database, f"{secret!r} in aol_actions / aol_execution_logs"
        for raw in tap.raw:
            assert secret not in raw, f"{secret!r} in a Celery event"
