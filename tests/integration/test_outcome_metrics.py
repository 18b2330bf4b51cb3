"""Clicks through /c/TOKEN (302, counted once per message and link, no open redirect); the day's
outcomes in CAMPAIGN_FETCH_METRICS with their rates; the console and `aicmo campaigns ls`
showing a brake; webhooks that never answer 500 to a few thousand bad requests."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicmo.cam import keys
from aicmo.cam.models import Lead, OutreachMessage, PublishStatus
from aicmo.cam.outcomes import events, mail
from aicmo.cam.outcomes.models import EmailEvent, EventKind
from aicmo.cli import main
from aicmo.config import reload_settings
from aicmo.db import utcnow
from aicmo.orchestration.adapters.campaign_adapter import handle_campaign_fetch_metrics
from aicmo.orchestration.queue import ActionQueue
from tests.integration.test_outcomes import GENERIC_SECRET, TOKEN_KEYS, make_campaign
from tests.support.web import Browser, WebServer, make_user

pytestmark = pytest.mark.usefixtures("clean")
ENV = {
    "AICMO_EMAIL_TOKEN_KEYS": TOKEN_KEYS,
    "AICMO_EMAIL_GENERIC_SECRET": GENERIC_SECRET,
    "AICMO_PUBLIC_BASE_URL": "https://mail.example.test",
    "AICMO_EMAIL_SVIX_SECRETS": "whsec_c2VjcmV0LWZvci1mdXp6",
    "AICMO_EMAIL_MAILGUN_SIGNING_KEY": "mg-key",
    "AICMO_EMAIL_POSTMARK_USERNAME": "pm",
    "AICMO_EMAIL_POSTMARK_PASSWORD": "pm-pass",
    "AICMO_EMAIL_SENDGRID_PUBLIC_KEY": (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7"
        "yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
    ),
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def web(log_dir: Path, env: None) -> Iterator[WebServer]:
    server = WebServer(log_dir, env=ENV).start()
    yield server
    server.stop()


def published(session: Session, message_id: int) -> OutreachMessage:
    message = session.get(OutreachMessage, message_id)
    assert message is not None
    message.publish_status, message.published_at_utc = PublishStatus.PUBLISHED, utcnow()
    message.external_id = f"<m{message_id}@sender.test>"
    session.commit()
    return message


def test_a_click_redirects_to_its_bound_url_once_counted_and_never_elsewhere(
    session: Session, web: WebServer
) -> None:
    campaign_id, [message_id] = make_campaign(session, 1, click_tracking=True)
    message = published(session, message_id)
    body = mail.track_links(
        "See https://example.org/a and https://example.org/b?x=1.",
        message_id,
        message.lead_id,
        campaign_id,
        "Outcomes",
    )
    links = [word.rstrip(".") for word in body.split() if word.startswith("https://mail.")]
    assert len(links) == 2
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    first = client.get(links[0].removeprefix("https://mail.example.test"))
    assert first.status_code == 302
    assert first.headers["location"] == (
        "https://example.org/a?utm_source=aicmo&utm_medium=email&utm_campaign=Outcomes"
    )
    for _ in range(2):
        client.get(links[0].removeprefix("https://mail.example.test"))
    second = client.get(links[1].removeprefix("https://mail.example.test"))
    assert second.headers["location"].startswith("https://example.org/b?x=1&utm_source=aicmo")
    # A token edited to lead elsewhere is refused: only URLs of the message, bound in the MAC.
    token = links[0].rsplit("/", 1)[1]
    kind, _payload, mac = token.split(".")
    forged = mail.tokens._b64(
        b'{"m":%d,"l":%d,"c":%d,"u":"https://evil.example"}'
        % (message_id, message.lead_id, campaign_id)
    )
    for bad in (f"{kind}.{forged}.{mac}", token[:-3] + "xyz", "c1.x.y"):
        refused = client.get("/c/" + bad)
        assert refused.status_code == 404 and "location" not in refused.headers
    session.expire_all()
    clicks = session.scalar(
        select(func.count()).select_from(EmailEvent).where(EmailEvent.kind == EventKind.CLICK)
    )
    assert clicks == 2  # one per message and link, however often clicked


def test_fetch_metrics_records_the_days_outcomes_and_rates(session: Session, env: None) -> None:
    campaign_id, ids = make_campaign(session, 10)
    for message_id in ids:
        published(session, message_id)
    now = utcnow()
    plan = [(EventKind.DELIVERED, ids[:8]), (EventKind.OPEN, ids[:4]), (EventKind.CLICK, ids[:2])]
    plan += [(EventKind.BOUNCE_HARD, ids[8:9]), (EventKind.BOUNCE_SOFT, ids[9:10])]
    plan += [(EventKind.OPEN, ids[:1])]  # a second open of one message counts once
    for n, (kind, targets) in enumerate(plan):
        for message_id in targets:
            events.apply(
                session,
                events.EmailEventPayload(
                    provider="generic",
                    event_id=f"{kind}-{message_id}-{n}",
                    kind=kind,
                    occurred_at=now,
                    message_ref=f"m{message_id}@sender.test",
                ),
                now,
            )
    session.commit()
    day = now.date()  # the campaign's timezone is UTC
    action = ActionQueue.enqueue_action(
        session,
        keys.FETCH_METRICS,
        {"campaign_id": campaign_id, "date": day.isoformat()},
        idempotency_key=keys.metrics_key(campaign_id, day),
        # Waiting (no message for the shared worker): the direct call below runs it.
        not_before=now + timedelta(hours=1),
    )
    session.commit()
    result = handle_campaign_fetch_metrics(
        session, action.id, {"campaign_id": campaign_id, "date": day.isoformat()}, proof_mode=True
    )
    assert (result["email_sent"], result["delivered"], result["opened"], result["clicked"]) == (
        10,
        8,
        4,
        2,
    )
    assert (result["bounced_hard"], result["bounced_soft"], result["complained"]) == (1, 1, 0)
    assert result["delivery_rate"] == 0.8 and result["hard_bounce_rate"] == 0.1
    assert result["open_rate"] == 0.5 and result["click_rate"] == 0.25
    # The hard bounce suppressed its address.
    bounced = session.get(Lead, session.get(OutreachMessage, ids[8]).lead_id)  # type: ignore[union-attr]
    assert bounced is not None
    from aicmo.cam.suppressions import is_suppressed

    assert is_suppressed(session, bounced.email or "")


def test_a_braked_campaign_shows_its_reason_in_the_console_and_the_cli(
    session: Session, web: WebServer, env: None
) -> None:
    campaign_id, [message_id] = make_campaign(session, 1)
    published(session, message_id)
    events.apply(
        session,
        events.EmailEventPayload(
            provider="generic",
            event_id="c-1",
            kind=EventKind.COMPLAINT,
            occurred_at=utcnow(),
            message_ref=f"m{message_id}@sender.test",
        ),
        utcnow(),
    )
    session.commit()
    browser = Browser(web)
    browser.login(make_user("viewer"))
    page = browser.get(f"/campaigns/{campaign_id}").text
    assert 'id="brake-reason"' in page and "complaint rate" in page
    assert 'aria-label="daily email outcomes"' in page or "no daily metrics" in page
    listing = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["campaigns", "ls"])
    assert listing.exit_code == 0, listing.output
    assert "braked: automatic brake: complaint rate" in listing.output
    resumed = CliRunner().invoke(main, ["campaigns", "resume", str(campaign_id), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert '"brake_reason": null' in resumed.output


@pytest.mark.parametrize(
    "provider", ["ses", "sendgrid", "postmark", "resend", "mailgun", "generic"]
)
def test_thousands_of_bad_webhook_requests_never_get_a_500(web: WebServer, provider: str) -> None:
    rng = random.Random(provider)
    seeds = [b'{"events": [{"id": "x", "type": "complaint", "timestamp": 1}]}', b"[{}]", b"{}"]
    header_sets: list[dict[str, Any]] = [
        {},
        {"X-Aicmo-Signature": "t=1,v2=00"},
        {"svix-id": "a", "svix-timestamp": str(int(time.time())), "svix-signature": "v1,AAAA"},
        {"Authorization": "Basic cG06d3Jvbmc="},
        {
            "X-Twilio-Email-Event-Webhook-Signature": "AAAA",
            "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time())),
        },
    ]
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 20
    sent = 0
    with httpx.Client(base_url=web.url, timeout=10) as client:
        while sent < 2000 and time.monotonic() < deadline:
            body = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(0, 4)):
                if body:
                    body[rng.randrange(len(body))] = rng.randrange(256)
            response = client.post(
                f"/webhooks/email/{provider}", content=bytes(body), headers=rng.choice(header_sets)
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            sent += 1
    assert sent >= 300
    assert all(400 <= status < 500 for status in statuses), statuses


# -- each provider through the real service, signed right and wrong -------------------------------


@pytest.fixture(scope="module")
def sns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.support.email_events import SnsCertServer

    server = SnsCertServer(tmp_path_factory.mktemp("sns-web")).start()
    yield server
    server.stop()


def test_every_provider_through_the_webhook_signed_right_and_wrong(
    session: Session, log_dir: Path, sns_server: Any, book: Any, shared_worker: Any
) -> None:
    import base64
    import json

    from aicmo.gateways.email_events import mailgun, sendgrid, svix
    from tests.support.email_events import sendgrid_keys, sendgrid_sign

    sg_key, sg_public = sendgrid_keys()
    svix_secret = "whsec_" + base64.b64encode(b"svix-web-secret").decode()
    env = {
        **ENV,
        "AICMO_EMAIL_SENDGRID_PUBLIC_KEY": sg_public,
        "AICMO_EMAIL_SVIX_SECRETS": svix_secret,
        "AICMO_EMAIL_SNS_CERT_URL_PATTERN": sns_server.pattern,
        "AICMO_EMAIL_SNS_CA_FILE": str(sns_server.ca_file),
    }
    campaign_id, ids = make_campaign(session, 6)
    for message_id in ids:
        published(session, message_id)
    ref = [f"m{message_id}@sender.test" for message_id in ids]
    now = int(time.time())
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))

    def basic(user: str, password: str) -> dict[str, str]:
        return {
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    ses_body = json.dumps(
        sns_server.message(
            {
                "eventType": "Delivery",
                "delivery": {"timestamp": iso},
                "mail": {"messageId": "ses-1", "commonHeaders": {"messageId": f"<{ref[0]}>"}},
            },
            "sns-web-1",
        )
    ).encode()
    sg_body = json.dumps(
        [{"event": "open", "sg_event_id": "sg-w1", "timestamp": now, "smtp-id": f"<{ref[1]}>"}]
    ).encode()
    pm_body = json.dumps(
        {
            "RecordType": "Delivery",
            "MessageID": "pm-1",
            "DeliveredAt": iso,
            "Metadata": {"message-id": ref[2]},
        }
    ).encode()
    rs_body = json.dumps(
        {
            "type": "email.delivered",
            "created_at": iso,
            "data": {
                "email_id": "re-1",
                "headers": [{"name": "Message-ID", "value": f"<{ref[3]}>"}],
            },
        }
    ).encode()
    mg_token = "k" * 50
    mg = lambda key: json.dumps(  # noqa: E731 - two signings of one body
        {
            "signature": {
                "timestamp": str(now),
                "token": mg_token,
                "signature": mailgun.sign(key, str(now), mg_token),
            },
            "event-data": {
                "event": "delivered",
                "id": "mg-w1",
                "timestamp": now,
                "message": {"headers": {"message-id": ref[4]}},
            },
        }
    ).encode()
    other_sg, _ = sendgrid_keys()
    cases = [
        ("ses", ses_body, {}, ses_body.replace(b"Delivery", b"Bounce"), {}),
        (
            "sendgrid",
            sg_body,
            {
                sendgrid.SIGNATURE_HEADER: sendgrid_sign(sg_key, str(now), sg_body),
                sendgrid.TIMESTAMP_HEADER: str(now),
            },
            sg_body,
            {
                sendgrid.SIGNATURE_HEADER: sendgrid_sign(other_sg, str(now), sg_body),
                sendgrid.TIMESTAMP_HEADER: str(now),
            },
        ),
        ("postmark", pm_body, basic("pm", "pm-pass"), pm_body, basic("pm", "nope")),
        (
            "resend",
            rs_body,
            {
                "svix-id": "msg_w1",
                "svix-timestamp": str(now),
                "svix-signature": svix.sign(svix_secret, "msg_w1", now, rs_body),
            },
            rs_body,
            {
                "svix-id": "msg_w1",
                "svix-timestamp": str(now),
                "svix-signature": svix.sign(svix_secret, "msg_w2", now, rs_body),
            },
        ),
        ("mailgun", mg("mg-key"), {}, mg("wrong-key"), {}),
    ]
    server = WebServer(log_dir, env=env).start()
    try:
        actions = []
        for provider, good, good_headers, bad, bad_headers in cases:
            refused = httpx.post(
                f"{server.url}/webhooks/email/{provider}", content=bad, headers=bad_headers
            )
            assert refused.status_code == 401, (provider, refused.text)
            accepted = httpx.post(
                f"{server.url}/webhooks/email/{provider}", content=good, headers=good_headers
            )
            assert accepted.status_code == 200, (provider, accepted.text)
            assert accepted.json()["created"] == 1, provider
            actions += accepted.json()["action_ids"]
    finally:
        server.stop()
    from tests.support.processes import wait_for

    wait_for(lambda: all(book.action(a).status == "SUCCESS" for a in actions), 60, message="events")
    session.expire_all()
    linked = dict(session.execute(select(EmailEvent.provider, EmailEvent.message_id)).all())
    assert linked == {
        "ses": ids[0],
        "sendgrid": ids[1],
        "postmark": ids[2],
        "resend": ids[3],
        "mailgun": ids[4],
    }
    assert campaign_id


def _event(kind: EventKind, event_id: str, message_id: int) -> events.EmailEventPayload:
    return events.EmailEventPayload(
        provider="generic",
        event_id=event_id,
        kind=kind,
        occurred_at=utcnow(),
        message_ref=f"m{message_id}@sender.test",
    )


def test_soft_bounces_suppress_after_n_within_the_window(session: Session, env: None) -> None:
    from aicmo.cam.suppressions import is_suppressed

    _, [message_id] = make_campaign(session, 1)
    published(session, message_id)
    for n in range(3):  # the default limit is 3 within 7 days
        assert not is_suppressed(session, "person0@example.org")
        result = events.apply(session, _event(EventKind.BOUNCE_SOFT, f"s{n}", message_id), utcnow())
        session.commit()
    assert result["effect"] == "suppressed"
    assert is_suppressed(session, "person0@example.org")
    # A retried event is a no-op.
    again = events.apply(session, _event(EventKind.BOUNCE_SOFT, "s2", message_id), utcnow())
    assert again["duplicate"] is True


def test_a_sending_domain_brake_pauses_all_its_campaigns_until_released(
    session: Session, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aicmo.cam import campaigns
    from aicmo.cam.errors import InvalidCampaign
    from aicmo.cam.outcomes import brakes

    # Rates over at least 10 sends: each campaign has 10, the domain 20.
    monkeypatch.setenv("AICMO_BRAKE_MIN_DELIVERIES", "10")
    reload_settings()
    first, first_ids = make_campaign(session, 10)
    second, second_ids = make_campaign(session, 10)
    for message_id in first_ids + second_ids:
        published(session, message_id)
    # One hard bounce: 10% of the first campaign (braked), 5% of the domain (not above 5%).
    events.apply(session, _event(EventKind.BOUNCE_HARD, "hb1", first_ids[0]), utcnow())
    session.commit()
    assert campaigns.get_campaign(session, first).status == "PAUSED"
    reason = brakes.check_domain(session, "sender.test", utcnow())
    session.commit()
    assert reason is None
    # A second, in the other campaign: 10% of the domain, which brakes every campaign of it.
    events.apply(session, _event(EventKind.BOUNCE_HARD, "hb2", second_ids[0]), utcnow())
    session.commit()
    assert campaigns.get_campaign(session, second).status == "PAUSED"
    assert [b.domain for b in brakes.list_domain_brakes(session)] == ["sender.test"]
    with pytest.raises(InvalidCampaign, match="release it first"):
        campaigns.resume(session, first)
    session.rollback()
    assert brakes.release_domain(session, "sender.test", "ops", utcnow())
    session.commit()
    assert campaigns.resume(session, first).status == "ACTIVE"


def test_token_keys_rotate_sign_with_the_first_verify_with_any(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aicmo.cam.outcomes import tokens

    monkeypatch.setenv("AICMO_EMAIL_TOKEN_KEYS", "old-key")
    reload_settings()
    old = tokens.make("u", 1, 2, 3)
    monkeypatch.setenv("AICMO_EMAIL_TOKEN_KEYS", "new-key,old-key")
    reload_settings()
    assert tokens.read(old, "u").message_id == 1
    new = tokens.make("u", 1, 2, 3)
    assert new != old
    monkeypatch.setenv("AICMO_EMAIL_TOKEN_KEYS", "new-key")
    reload_settings()
    with pytest.raises(tokens.BadToken):
        tokens.read(old, "u")
    assert tokens.read(new, "u").campaign_id == 3
    monkeypatch.undo()
    reload_settings()


def test_doctor_shows_what_a_brake_paused(session: Session, env: None) -> None:
    from aicmo.ops import doctor

    _, [message_id] = make_campaign(session, 1)
    published(session, message_id)
    events.apply(session, _event(EventKind.COMPLAINT, "doc-1", message_id), utcnow())
    session.commit()
    [finding] = doctor.find(session, ["braked"])
    assert finding.subject.startswith("campaign ") and "complaint rate" in finding.detail
    assert not finding.repairable
