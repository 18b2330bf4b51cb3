"""The outcome loop against the real parts: mail through a real SMTP server (aiosmtpd) carries
RFC 8058 unsubscribe headers and a working link; one-click unsubscribe over a real `aicmo serve`;
a provider event through the webhook and a real worker; a queued publish stopped by an
unsubscribe; a campaign of 1,000 sends with 0.5% complaints braking itself."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicmo.cam import campaigns, publishing
from aicmo.cam.errors import CampaignHalted
from aicmo.cam.models import Consent, Lead, OutreachMessage, PublishStatus, Suppression
from aicmo.cam.outcomes import events, mail
from aicmo.cam.outcomes.models import EmailEvent, EventKind
from aicmo.config import reload_settings
from aicmo.db import utcnow
from aicmo.gateways.email_events import generic
from aicmo.ops import control
from aicmo.orchestration.adapters.campaign_adapter import handle_campaign_publish
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support.fake_smtp import FakeSMTPServer
from tests.support.processes import wait_for, worker
from tests.support.web import WebServer

pytestmark = pytest.mark.usefixtures("clean")
TOKEN_KEYS = "token-key-new,token-key-old"
GENERIC_SECRET = "generic-outcomes-secret"


@pytest.fixture
def outcome_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = {
        "AICMO_EMAIL_TOKEN_KEYS": TOKEN_KEYS,
        "AICMO_EMAIL_GENERIC_SECRET": GENERIC_SECRET,
        "AICMO_PUBLIC_BASE_URL": "https://mail.example.test",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    yield env
    monkeypatch.undo()
    reload_settings()


def make_campaign(session: Session, leads: int, **spec: Any) -> tuple[int, list[int]]:
    campaign = campaigns.create_campaign(
        session,
        {
            "name": "Outcomes",
            "timezone": "UTC",
            "tick_every_minutes": 60,
            "batch_size": 10,
            "daily_send_limit": 100_000,
            "channels": ["email"],
            "from_address": "team@sender.test",
            "steps": [{"subject": "Hello", "body": "Hi, see https://example.org/page?x=1."}],
            **spec,
        },
    )
    campaigns.activate(session, campaign.id)
    now = utcnow()
    rows = [
        Lead(
            campaign_id=campaign.id,
            identity_hash=f"h{i}",
            email=f"person{i}@example.org",
            email_domain="example.org",
            source="test",
            step=1,
        )
        for i in range(leads)
    ]
    session.add_all(rows)
    session.flush()
    messages = [
        OutreachMessage(
            campaign_id=campaign.id,
            lead_id=lead.id,
            step=1,
            channel="email",
            subject="Hello",
            body="Hi, see https://example.org/page?x=1.",
            generated_by="template",
            publish_status=PublishStatus.APPROVED,
            approved_at_utc=now,
        )
        for lead in rows
    ]
    session.add_all(messages)
    session.commit()
    return campaign.id, [m.id for m in messages]


# -- the headers of real mail ------------------------------------------------------------------


def test_sent_mail_carries_one_click_unsubscribe_headers_and_link(
    session: Session, outcome_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeSMTPServer("pw", security="none").start()
    try:
        for name, value in {
            "AICMO_PROOF_MODE": "false",
            "AICMO_SMTP_HOST": "127.0.0.1",
            "AICMO_SMTP_PORT": str(server.port),
            "AICMO_SMTP_SECURITY": "none",
        }.items():
            monkeypatch.setenv(name, value)
        reload_settings()
        _, [message_id] = make_campaign(session, 1, mode="live", click_tracking=True)
        # Due later, so no broker message: no worker (a shared one may run) takes it first.
        action = ActionQueue.enqueue_action(
            session,
            "CAMPAIGN_PUBLISH",
            {"message_id": message_id},
            not_before=utcnow() + timedelta(hours=1),
        )
        session.commit()
        handle_campaign_publish(session, action.id, {"message_id": message_id})
        wait_for(lambda: server.received, 10, message="the mail at the SMTP server")
        got = server.received[-1].message
    finally:
        server.stop()
    header = re.sub(r"\r?\n[ \t]+", " ", str(got["List-Unsubscribe"]))  # unfolded
    match = re.fullmatch(
        r"<(https://mail\.example\.test/u/[A-Za-z0-9_.-]+)>, "
        r"<mailto:unsubscribe@sender\.test\?subject=unsubscribe>",
        header,
    )
    assert match, header
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = got.get_payload(decode=True).decode()
    assert match.group(1) in body  # the visible link is the same one
    # The campaign tracks clicks: its link goes through /c/ and the original is not in clear.
    assert "https://mail.example.test/c/" in body
    assert "https://example.org/page" not in body
    session.expire_all()
    sent = session.get(OutreachMessage, message_id)
    assert sent is not None and sent.publish_status == PublishStatus.PUBLISHED
    assert sent.external_id == got["Message-ID"]


# -- one click, over the real service -----------------------------------------------------------


@pytest.fixture
def web(log_dir: Path, outcome_env: dict[str, str]) -> Iterator[WebServer]:
    server = WebServer(log_dir, env=outcome_env).start()
    yield server
    server.stop()


def test_one_click_unsubscribe_suppresses_everywhere_at_once(
    session: Session, web: WebServer
) -> None:
    campaign_id, [message_id] = make_campaign(session, 1)
    other_id, _ = make_campaign(session, 1)  # the same address in another campaign
    lead = session.scalars(select(Lead).where(Lead.campaign_id == campaign_id)).one()
    link = mail.unsubscribe_url(message_id, lead.id, campaign_id)
    path = link.removeprefix("https://mail.example.test")

    page = httpx.get(web.url + path, headers={"Accept": "text/html"})
    assert page.status_code == 200 and 'id="unsubscribe"' in page.text
    assert "person0@example.org" not in page.text  # masked

    token = path.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, "u1.e30.AAAA", "garbage", token.replace("u1.", "c1.")):
        refused = httpx.post(web.url + "/u/" + bad, data={"List-Unsubscribe": "One-Click"})
        assert 400 <= refused.status_code < 500, (bad, refused.status_code)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0

    for _ in range(2):  # idempotent
        done = httpx.post(web.url + path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200, done.text
    session.expire_all()
    assert session.scalars(select(Suppression.value)).all() == ["person0@example.org"]
    consents = session.scalars(
        select(Lead.consent).where(Lead.email == "person0@example.org")
    ).all()
    assert consents == [Consent.DNC, Consent.DNC]
    assert session.scalar(select(func.count()).select_from(EmailEvent)) == 1
    # The other campaign's approved message to the address is refused by the gate.
    other_message = session.scalars(
        select(OutreachMessage.id).where(OutreachMessage.campaign_id == other_id)
    ).one()
    refused_publish = publishing.begin_publish(session, other_message, 10**9, utcnow(), True)
    assert isinstance(refused_publish, publishing.Refused)
    session.rollback()
    scrape = httpx.get(web.url + "/metrics").text
    assert "aicmo_unsubscribe_to_suppression_seconds_count 2.0" in scrape
    assert 'aicmo_unsubscribe_requests_total{outcome="again"} 1.0' in scrape


def test_unsubscribe_while_a_publish_is_queued_stops_it(
    session: Session, web: WebServer, log_dir: Path, book: Book, outcome_env: dict[str, str]
) -> None:
    campaign_id, [message_id] = make_campaign(session, 1)
    # Workers (a shared one may already run) leave publishes unclaimed until the resume below:
    # the publish is queued, in the broker, while the recipient clicks.
    control.pause("CAMPAIGN_PUBLISH", "test: hold the publish", by="test")
    try:
        queued = publishing.queue_approved(session, campaign_id, utcnow())
        session.commit()
        assert queued == [message_id]
        _unsubscribe_while_queued(session, web, message_id, campaign_id)
    finally:
        control.resume("CAMPAIGN_PUBLISH", by="test")
    late_worker = worker(log_dir, env=outcome_env).start()
    try:
        wait_for(
            lambda: book.action(action_id(session, message_id)).status == "FAILED",
            60,
            message="publish refused",
        )
    finally:
        late_worker.stop()
    assert "DNC" in (book.action(action_id(session, message_id)).last_error or "")
    session.expire_all()
    stopped = session.get(OutreachMessage, message_id)
    assert stopped is not None and stopped.publish_status == PublishStatus.FAILED
    assert stopped.published_at_utc is None


def action_id(session: Session, message_id: int) -> int:
    session.expire_all()
    message = session.get(OutreachMessage, message_id)
    assert message is not None and message.publish_action_id is not None
    return message.publish_action_id


def _unsubscribe_while_queued(
    session: Session, web: WebServer, message_id: int, campaign_id: int
) -> None:
    message = session.get(OutreachMessage, message_id)
    assert message is not None and message.publish_status == PublishStatus.QUEUED
    lead = session.get(Lead, message.lead_id)
    assert lead is not None
    link = mail.unsubscribe_url(message_id, lead.id, campaign_id)
    response = httpx.post(
        web.url + link.removeprefix("https://mail.example.test"),
        data={"List-Unsubscribe": "One-Click"},
    )
    assert response.status_code == 200


def test_a_provider_complaint_through_the_webhook_and_a_worker(
    session: Session, web: WebServer, book: Book, shared_worker: Any
) -> None:
    campaign_id, [message_id] = make_campaign(session, 1)
    message = session.get(OutreachMessage, message_id)
    assert message is not None
    message.publish_status, message.published_at_utc = PublishStatus.PUBLISHED, utcnow()
    message.external_id = "<aicmo.abc@sender.test>"
    session.commit()
    stamp = int(time.time())
    body = (
        f'{{"events": [{{"id": "c-1", "type": "complaint", "timestamp": {stamp}, '
        '"message_id": "aicmo.abc@sender.test"}]}'
    ).encode()
    headers = {"X-Aicmo-Signature": generic.sign(GENERIC_SECRET, body, int(time.time()))}
    first = httpx.post(web.url + "/webhooks/email/generic", content=body, headers=headers)
    again = httpx.post(web.url + "/webhooks/email/generic", content=body, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    assert (first.json()["created"], again.json()["created"]) == (1, 0)
    wrong = httpx.post(
        web.url + "/webhooks/email/generic",
        content=body,
        headers={"X-Aicmo-Signature": generic.sign("nope", body, int(time.time()))},
    )
    assert wrong.status_code == 401
    assert httpx.post(web.url + "/webhooks/email/nobody", content=body).status_code == 404
    [action_id] = first.json()["action_ids"]
    wait_for(lambda: book.action(action_id).status == "SUCCESS", 60, message="event applied")
    session.expire_all()
    assert session.scalars(select(Suppression.value)).all() == ["person0@example.org"]
    assert session.scalar(select(Lead.consent)) == Consent.DNC
    # One complaint in one send is far over 0.3%: the campaign braked itself.
    campaign = campaigns.get_campaign(session, campaign_id)
    assert campaign.status == "PAUSED" and "complaint rate" in (campaign.brake_reason or "")


# -- the brake -----------------------------------------------------------------------------------


def test_a_campaign_with_half_a_percent_complaints_pauses_before_the_tenth(
    session: Session, outcome_env: dict[str, str]
) -> None:
    campaign_id, message_ids = make_campaign(session, 1000)
    rng = random.Random(8058)
    sent = complaints = 0
    halted = False
    for index, message_id in enumerate(message_ids):
        opened = publishing.begin_publish(session, message_id, 10_000 + index, utcnow(), True)
        session.commit()
        if isinstance(opened, publishing.Refused):
            assert isinstance(opened.error, CampaignHalted)
            halted = True
            break
        publishing.record_published(
            session, opened, f"<m{message_id}@sender.test>", 10_000 + index, utcnow()
        )
        session.commit()
        sent += 1
        if rng.random() < 0.005:
            complaints += 1
            events.apply(
                session,
                events.EmailEventPayload(
                    provider="generic",
                    event_id=f"complaint-{message_id}",
                    kind=EventKind.COMPLAINT,
                    occurred_at=utcnow(),
                    message_ref=f"m{message_id}@sender.test",
                ),
                utcnow(),
            )
            session.commit()
    campaign = campaigns.get_campaign(session, campaign_id)
    assert halted and campaign.status == "PAUSED", (sent, complaints)
    assert 1 <= complaints < 10
    assert sent < 1000
    assert campaign.brake_reason and "complaint rate" in campaign.brake_reason
    # An operator resumes explicitly, which clears the reason.
    resumed = campaigns.resume(session, campaign_id)
    assert resumed.status == "ACTIVE" and resumed.brake_reason is None
