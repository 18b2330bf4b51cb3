"""`aicmo serve` as a client sees it: a real server process on PostgreSQL and Redis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aicmo.cam.webhooks import sign
from aicmo.db import session_factory
from tests.conftest import ROOT, Book
from tests.support import campaigns as support
from tests.support.processes import CeleryProcess, wait_for
from tests.support.web import PASSWORD, WEBHOOK_SECRET, Browser, WebServer, make_user

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def server(database_url: str, redis_client: Any, log_dir: Path) -> Iterator[WebServer]:
    web = WebServer(log_dir).start()
    yield web
    web.stop()


def drafted(url: str, n: int = 3) -> tuple[int, list[int]]:
    from aicmo.cam.orchestrator import tick

    cid = support.create(url, n_leads=n)
    with session_factory(url)() as s, s.begin():
        tick(s, cid, generator=None)
    return cid, [m.id for m in support.messages(url, cid)]


def enqueue(url: str, action_type: str, payload: dict[str, Any]) -> int:
    from aicmo.orchestration.queue import ActionQueue

    with session_factory(url)() as s, s.begin():
        return ActionQueue.enqueue_action(s, action_type, payload, f"web-{uuid.uuid4().hex}").id


def signed(
    body: dict[str, Any] | bytes, secret: str = WEBHOOK_SECRET
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, {"X-Aicmo-Signature": sign(secret, raw, int(time.time()), source="form")}


def metric(server: WebServer, metric_name: str, /, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = all(sample.labels.get(k) == v for k, v in labels.items())
            if sample.name == metric_name and wanted:
                return float(sample.value)
    return 0.0


def test_only_health_metrics_and_webhooks_answer_without_a_login(server: WebServer) -> None:
    client = httpx.Client(base_url=server.url, timeout=30)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert {c["name"] for c in ready.json()["checks"]} == {"database", "broker", "beat"}
    assert client.get("/metrics").status_code == 200
    pages = ("/", "/review", "/actions", "/actions/1", "/dlq", "/campaigns", "/campaigns/1")
    pages += ("/docs",)
    for path in pages:
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path
    for path in ("/api/actions", "/api/stats", "/api/messages", "/api/campaigns", "/api/overview"):
        assert client.get(path).status_code == 401, path
    assert client.post("/api/dlq/replay", json={}).status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert (
        client.get("/api/stats", headers={"Authorization": "Bearer aicmo_nope"}).status_code == 401
    )


def test_session_cookie_is_signed_http_only_and_same_site(server: WebServer) -> None:
    browser = Browser(server)
    answer = browser.login(make_user("viewer"))
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert browser.get("/").status_code == 200
    # Behind the TLS proxy (a trusted X-Forwarded-Proto), the cookie is Secure.
    secure = httpx.get(server.url + "/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in secure.headers["set-cookie"]
    # A cookie whose signature does not match is no session.
    forged = httpx.Client(base_url=server.url, cookies={"aicmo_session": "eyJ1aWQiOjF9.x.y"})
    assert forged.get("/").status_code == 303


def test_csrf_token_is_required_for_every_session_change(server: WebServer) -> None:
    browser = Browser(server)
    browser.login(make_user("operator"))
    refused = browser.client.post("/dlq/replay", data={"type": ""})
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = browser.client.post("/dlq/replay", data={"type": "", "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    assert browser.post("/dlq/replay", {"type": ""}).status_code == 303
    # The login form is protected too (login CSRF).
    anonymous = httpx.post(server.url + "/login", data={"name": "a", "password": "b"})
    assert anonymous.status_code == 403


def test_roles_are_enforced_by_the_server(server: WebServer, database_url: str) -> None:
    _, (message, *_) = drafted(database_url)
    viewer, reviewer = Browser(server), Browser(server)
    viewer.login(make_user("viewer"))
    reviewer.login(make_user("reviewer"))
    refused = viewer.post("/review/decide", {"decision": "approve", "ids": [str(message)]})
    assert refused.status_code == 403 and "needs reviewer" in refused.text
    assert reviewer.post("/dlq/replay", {"type": ""}).status_code == 403
    assert reviewer.post("/actions/1/replay").status_code == 403
    assert reviewer.post("/campaigns/1/kill").status_code == 403
    with session_factory(database_url)() as s:
        from aicmo.cam.models import OutreachMessage

        assert s.get(OutreachMessage, message).publish_status == "DRAFT"


def test_login_is_locked_after_repeated_failures(server: WebServer) -> None:
    name = make_user("viewer")
    browser = Browser(server)
    for _ in range(5):
        assert browser.login(name, "wrong password!").status_code == 401
    # Locked now: even the right password is refused, with the same message.
    locked = browser.login(name, PASSWORD)
    assert locked.status_code == 401 and "locked" in locked.text


def test_approving_in_the_console_queues_the_publish_as_the_cli_does(
    server: WebServer, database_url: str, book: Book, shared_worker: CeleryProcess
) -> None:
    cid, (first, second, third) = drafted(database_url)
    browser = Browser(server)
    name = make_user("reviewer")
    browser.login(name)
    page = browser.get(f"/review?campaign={cid}").text
    assert f'id="message-{first}"' in page and "Hello Ada0" in page
    done = browser.post(
        "/review/decide", {"decision": "approve", "ids": [str(first), str(second)], "note": "ok"}
    )
    assert done.status_code == 303
    assert "2 publish action(s) queued" in unquote(done.headers["location"])
    rejected = browser.post("/review/decide", {"decision": "reject", "ids": [str(third)]})
    assert rejected.status_code == 303
    from aicmo.cam.models import OutreachMessage

    with session_factory(database_url)() as s:
        rows = {
            m.id: m for m in s.query(OutreachMessage).filter(OutreachMessage.campaign_id == cid)
        }
    assert rows[third].publish_status == "REJECTED" and rows[third].reviewer == f"web:{name}"
    for message_id in (first, second):
        assert rows[message_id].reviewer == f"web:{name}"
        action_id = rows[message_id].publish_action_id
        assert action_id is not None
        assert book.action(action_id).idempotency_key == f"cam_publish:{message_id}"
        book.wait_status(action_id, "SUCCESS", timeout=60)
    # The publish's page links its proof artifact (the .eml), served as plain text.
    page = browser.get(f"/actions/{action_id}").text
    link = re.search(r'href="(/actions/\d+/artifacts/\d+)"', page)
    assert link, page
    artifact = browser.get(link.group(1))
    assert artifact.status_code == 200 and artifact.headers["content-type"].startswith("text/plain")
    assert "Subject:" in artifact.text
    assert browser.get(f"/actions/{action_id}/artifacts/999999999").status_code == 404
    # The CLI reads the same rows and gives the same answers as the API.
    token = _token(name)
    api = httpx.get(
        server.url + f"/api/messages?campaign={cid}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["messages"]
    cli = subprocess.run(
        [sys.executable, "-m", "aicmo.cli", "messages", "ls", "-c", str(cid), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(cli.stdout) == api


def _token(name: str) -> str:
    from aicmo.ops.users import create_token

    return create_token(name, "test")


def test_api_tokens_act_for_their_user_and_are_stored_hashed(
    server: WebServer, database_url: str
) -> None:
    from sqlalchemy import select

    from aicmo.ops.users import WebApiToken

    name = make_user("operator")
    token = _token(name)
    headers = {"Authorization": f"Bearer {token}"}
    me = httpx.get(server.url + "/api/me", headers=headers).json()
    assert me == {"name": name, "role": "operator"}
    with session_factory(database_url)() as s:
        stored = list(s.scalars(select(WebApiToken.token_sha256)))
    assert token not in stored and all(len(d) == 64 for d in stored)
    # No CSRF needed for a token (a browser never sends it on its own)
    paused = httpx.post(server.url + "/api/pause", json={"reason": "test"}, headers=headers)
    assert paused.json() == {"paused": "all", "reason": "test"}
    resumed = httpx.post(server.url + "/api/resume", json={}, headers=headers)
    assert resumed.json()["resumed"] == "all"
    # A viewer's token cannot change anything.
    viewer = {"Authorization": f"Bearer {_token(make_user('viewer'))}"}
    assert httpx.post(server.url + "/api/pause", json={}, headers=viewer).status_code == 403


def test_replay_from_the_console_is_recorded_with_who_did_it(
    server: WebServer, database_url: str, book: Book, shared_worker: CeleryProcess
) -> None:
    action_id = enqueue(database_url, "T_ALWAYS_FAIL", {"tag": "web"})
    book.wait_status(action_id, "DLQ", timeout=60)
    browser = Browser(server)
    name = make_user("operator")
    browser.login(name)
    page = browser.get(f"/actions/{action_id}").text
    assert 'id="replay"' in page and "DEAD_LETTERED" in page
    assert browser.post(f"/actions/{action_id}/replay").status_code == 303
    assert "REPLAYED" in book.events(action_id)
    from sqlalchemy import select

    from aicmo.orchestration.models import AOLExecutionLog

    with session_factory(database_url)() as s:
        who = s.scalar(
            select(AOLExecutionLog.worker).where(
                AOLExecutionLog.action_id == action_id, AOLExecutionLog.event == "REPLAYED"
            )
        )
    assert who == f"web:{name}"


def test_webhook_answers(server: WebServer, database_url: str) -> None:
    cid = support.create(database_url, n_leads=0)
    url = server.url + "/webhooks/leads/form"
    event = {
        "event_id": f"ev-{uuid.uuid4().hex[:8]}",
        "campaign_id": cid,
        "leads": [{"email": "ada@example.com"}],
    }
    body, headers = signed(event)
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 202 and first.json()["created"] is True
    again = httpx.post(url, content=body, headers=headers)
    assert again.status_code == 200 and again.json()["action_id"] == first.json()["action_id"]
    assert httpx.post(url, content=body).status_code == 401
    assert httpx.post(url, content=body, headers=signed(event, "wrong")[1]).status_code == 401
    assert (
        httpx.post(server.url + "/webhooks/leads/other", content=body, headers=headers).status_code
        == 404
    )
    changed, changed_headers = signed({**event, "leads": [{"email": "bob@example.com"}]})
    assert httpx.post(url, content=changed, headers=changed_headers).status_code == 409
    big, big_headers = signed(b"{" + b" " * (300 * 1024) + b"}")
    assert httpx.post(url, content=big, headers=big_headers).status_code == 413
    bad, bad_headers = signed({"event_id": "x", "campaign_id": cid})
    invalid = httpx.post(url, content=bad, headers=bad_headers)
    assert invalid.status_code == 422 and "leads" in invalid.json()["error"]
    assert metric(server, "aicmo_webhook_requests_total", outcome="accepted") >= 1
    assert metric(server, "aicmo_webhook_requests_total", outcome="bad_signature") >= 2


def test_metrics_count_finished_actions_from_the_execution_log(
    server: WebServer, database_url: str, book: Book, shared_worker: CeleryProcess
) -> None:
    metric(server, "aicmo_actions_finished_total")  # the first scrape sets the tail's start
    before = metric(server, "celery_task_succeeded_total", name="aol.T_NOOP")
    ids = [enqueue(database_url, "T_NOOP", {"n": n}) for n in range(3)]
    book.wait_all(ids, "SUCCESS")

    def counted() -> bool:
        return metric(server, "celery_task_succeeded_total", name="aol.T_NOOP") >= before + 3

    wait_for(counted, 30, interval=0.5, message="the succeeded counter to grow by 3")
    assert metric(server, "aicmo_actions_finished_total", type="T_NOOP", outcome="success") >= 3
    assert metric(server, "aicmo_action_run_duration_seconds_count", type="T_NOOP") >= 3
    assert metric(server, "aicmo_action_queue_latency_seconds_count", type="T_NOOP") >= 3
    assert metric(server, "aicmo_actions", type="T_NOOP", status="SUCCESS") >= 3


def test_metrics_can_require_a_token(database_url: str, log_dir: Path) -> None:
    web = WebServer(log_dir, env={"AICMO_WEB_METRICS_TOKEN": "scrape-me-please"}).start()
    try:
        assert httpx.get(web.url + "/metrics").status_code == 401
        ok = httpx.get(web.url + "/metrics", headers={"Authorization": "Bearer scrape-me-please"})
        assert ok.status_code == 200 and "aicmo_dlq_size" in ok.text
    finally:
        web.stop()


def test_serve_runs_on_the_embedded_sqlite_default(tmp_path: Path, log_dir: Path) -> None:
    env = {
        "AICMO_DATABASE_URL": f"sqlite:///{tmp_path / 'aicmo.db'}",
        "AICMO_BROKER_URL": "filesystem://",
        "AICMO_BROKER_DIR": str(tmp_path / "broker"),
    }
    subprocess.run(
        [sys.executable, "-m", "aicmo.cli", "db", "upgrade"],
        cwd=ROOT,
        env={**__import__("os").environ, **env},
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aicmo.cli",
            "users",
            "add",
            "ada",
            "--role",
            "admin",
            "--password-stdin",
        ],
        cwd=ROOT,
        env={**__import__("os").environ, **env},
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    web = WebServer(log_dir, env=env).start()
    try:
        browser = Browser(web)
        assert browser.login("ada").status_code == 303
        for path in ("/", "/review", "/actions", "/dlq", "/campaigns"):
            assert browser.get(path).status_code == 200, path
        assert httpx.get(web.url + "/readyz").json()["checks"][0]["ok"] is True
    finally:
        web.stop()


def test_the_grafana_dashboard_only_uses_metrics_the_service_exports(server: WebServer) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana" / "aicmo-dashboard.json").read_text())
    text = httpx.get(server.url + "/metrics").text
    # Every declared metric has a HELP line, with samples or not (a labelled counter has
    # none until something happened); a histogram's series add _bucket/_count/_sum.
    declared = set(re.findall(r"^# HELP (\S+)", text, re.MULTILINE))
    exported = declared | {f"{n}{s}" for n in declared for s in ("_bucket", "_count", "_sum")}
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:aicmo|celery)_[a-z_]+)\b", target["expr"])
    }
    assert used and used <= exported, used - exported


def test_action_filters_by_campaign_and_key(server: WebServer, database_url: str) -> None:
    cid, _ = drafted(database_url)
    other, _ = drafted(database_url)
    tick_id = support.enqueue_tick(database_url, cid)
    support.enqueue_tick(database_url, other)
    headers = {"Authorization": f"Bearer {_token(make_user('viewer'))}"}
    found = httpx.get(
        server.url + f"/api/actions?campaign={cid}", headers=headers, timeout=30
    ).json()["actions"]
    assert tick_id in {a["id"] for a in found}
    assert all(a["payload"]["campaign_id"] == cid for a in found)
    key = found[0]["idempotency_key"]
    by_key = httpx.get(
        server.url + "/api/actions", params={"key": key}, headers=headers, timeout=30
    ).json()["actions"]
    assert [a["idempotency_key"] for a in by_key] == [key]


def test_a_disabled_user_is_out_at_once(server: WebServer) -> None:
    name = make_user("operator")
    browser = Browser(server)
    browser.login(name)
    assert browser.get("/").status_code == 200
    token = _token(name)
    disabled = subprocess.run(
        [sys.executable, "-m", "aicmo.cli", "users", "set", name, "--disable", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(disabled.stdout)["disabled"] is True
    assert browser.get("/").status_code == 303  # the session no longer counts
    refused = httpx.get(server.url + "/api/me", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert Browser(server).login(name).status_code == 401


def test_overview_answers_like_the_cli_stats(
    server: WebServer, database_url: str, book: Book, shared_worker: CeleryProcess
) -> None:
    ids = [enqueue(database_url, "T_NOOP", {"n": n}) for n in range(2)]
    dead = enqueue(database_url, "T_ALWAYS_FAIL", {"tag": "overview"})
    book.wait_all(ids, "SUCCESS")
    book.wait_status(dead, "DLQ", timeout=60)
    headers = {"Authorization": f"Bearer {_token(make_user('viewer'))}"}
    overview = httpx.get(server.url + "/api/overview", headers=headers, timeout=30).json()
    cli = subprocess.run(
        [sys.executable, "-m", "aicmo.cli", "stats", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(cli.stdout)
    for status, n in overview["by_status"].items():
        assert stats["by_status"][status] == n, status
    assert overview["dlq_size"] == stats["dlq_size"] == 1
    assert overview["finished_last_hour"] == {"SUCCEEDED": 2, "DEAD_LETTERED": 1}
    assert overview["workers_seen_last_hour"]
    assert httpx.get(server.url + "/api/doctor", headers=headers).status_code == 403


def test_the_doctor_page_and_api_answer_like_the_cli(server: WebServer, database_url: str) -> None:
    from sqlalchemy import text

    from aicmo.db import get_engine

    with get_engine(database_url).begin() as conn:
        gone = conn.execute(
            text(
                "INSERT INTO aol_actions (idempotency_key, action_type, payload_json, status,"
                " not_before_utc, attempts, max_attempts, created_at_utc, updated_at_utc)"
                " VALUES (:key, 'T_GONE', '{}'::jsonb, 'READY', now(), 0, 3, now(), now())"
                " RETURNING id"
            ),
            {"key": f"web-doctor-{uuid.uuid4().hex}"},
        ).scalar_one()
    operator = make_user("operator")
    api = httpx.get(
        server.url + "/api/doctor", headers={"Authorization": f"Bearer {_token(operator)}"}
    ).json()
    cli = subprocess.run(
        [sys.executable, "-m", "aicmo.cli", "doctor", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1
    assert api["findings"] == json.loads(cli.stdout)["findings"]
    assert {"check": "unknown_type", "subject": f"action {gone}"}.items() <= api["findings"][
        0
    ].items()
    browser = Browser(server)
    browser.login(operator)
    page = browser.get("/doctor")
    assert page.status_code == 200
    assert f"action {gone}" in page.text and "T_GONE" in page.text


def test_a_password_change_ends_the_sessions_made_before(server: WebServer) -> None:
    from aicmo.ops.users import update_user

    name = make_user("viewer")
    browser = Browser(server)
    browser.login(name)
    assert browser.get("/").status_code == 200
    update_user(name, password="another long password")
    assert browser.get("/").status_code == 303
    assert Browser(server).login(name, "another long password").status_code == 303


def test_review_queue_pages_by_key(database_url: str) -> None:
    from aicmo.ops.review import review_queue

    cid, ids = drafted(database_url, n=5)
    first = review_queue(cid, limit=2)
    rest = review_queue(cid, limit=10, after_id=first[-1]["id"])
    assert [m["id"] for m in first + rest] == sorted(ids)
    assert all(m["address"].endswith(".com") for m in first + rest)
