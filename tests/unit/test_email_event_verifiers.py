"""Each provider's documented webhook format, correctly and incorrectly signed; a few thousand
bad requests per provider get a refusal (an EventRejected / ValueError: a 4xx), nothing else."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aicmo.config import reload_settings
from aicmo.gateways.email_events import (
    BadEventSignature,
    EventRejected,
    ProviderUnconfigured,
    generic,
    mailgun,
    postmark,
    sendgrid,
    ses,
    svix,
)
from tests.support.email_events import SnsCertServer, sendgrid_keys, sendgrid_sign

SVIX_SECRET = "whsec_" + base64.b64encode(b"svix-test-secret-0123456789abcd").decode()
MAILGUN_KEY = "mailgun-signing-key-test"
GENERIC_SECRET = "generic-secret-test"
SG_KEY, SG_PUBLIC = sendgrid_keys()


@pytest.fixture(scope="module")
def sns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnsCertServer]:
    server = SnsCertServer(tmp_path_factory.mktemp("sns")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch, sns: SnsCertServer) -> Iterator[None]:
    env = {
        "AICMO_EMAIL_SVIX_SECRETS": "whsec_b2xk," + SVIX_SECRET,
        "AICMO_EMAIL_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "AICMO_EMAIL_GENERIC_SECRET": GENERIC_SECRET,
        "AICMO_EMAIL_SENDGRID_PUBLIC_KEY": SG_PUBLIC,
        "AICMO_EMAIL_POSTMARK_USERNAME": "pm",
        "AICMO_EMAIL_POSTMARK_PASSWORD": "pm-pass",
        "AICMO_EMAIL_SNS_CERT_URL_PATTERN": sns.pattern,
        "AICMO_EMAIL_SNS_CA_FILE": str(sns.ca_file),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


# -- Svix (Resend) ---------------------------------------------------------------------------

RESEND = json.dumps(
    {
        "type": "email.bounced",
        "created_at": "2026-12-01T10:00:00.000Z",
        "data": {"email_id": "re-1", "to": ["ada@example.com"], "bounce": {"type": "Permanent"}},
    }
).encode()


def svix_headers(body: bytes, stamp: int, secret: str = SVIX_SECRET) -> dict[str, str]:
    return {
        "svix-id": "msg_1",
        "svix-timestamp": str(stamp),
        "svix-signature": "v1,bm9wZQ== " + svix.sign(secret, "msg_1", stamp, body),
    }


def test_svix_good_signature_gives_the_event() -> None:
    now = time.time()
    [event] = svix.verify(RESEND, svix_headers(RESEND, int(now)), now)
    assert (event.event_id, event.kind, event.recipient, event.provider_message_id) == (
        "msg_1",
        "bounce_hard",
        "ada@example.com",
        "re-1",
    )


@pytest.mark.parametrize("case", ["wrong_secret", "tampered", "stale", "no_header"])
def test_svix_bad_signatures_are_refused(case: str) -> None:
    now = time.time()
    other = "whsec_" + base64.b64encode(b"another-secret").decode()
    headers = svix_headers(RESEND, int(now), other if case == "wrong_secret" else SVIX_SECRET)
    body = RESEND + b" " if case == "tampered" else RESEND
    if case == "stale":
        headers = svix_headers(RESEND, int(now) - 301)
    if case == "no_header":
        headers.pop("svix-signature")
    with pytest.raises(BadEventSignature):
        svix.verify(body, headers, now)


# -- Mailgun ---------------------------------------------------------------------------------


def mailgun_body(stamp: str, key: str = MAILGUN_KEY, severity: str = "permanent") -> bytes:
    token = "t" * 50
    return json.dumps(
        {
            "signature": {
                "timestamp": stamp,
                "token": token,
                "signature": mailgun.sign(key, stamp, token),
            },
            "event-data": {
                "event": "failed",
                "severity": severity,
                "id": "mg-ev-1",
                "timestamp": float(stamp),
                "recipient": "ada@example.com",
                "message": {"headers": {"message-id": "aicmo.abc@example.com"}},
            },
        }
    ).encode()


def test_mailgun_good_signature_and_severity() -> None:
    now = time.time()
    [hard] = mailgun.verify(mailgun_body(str(int(now))), {}, now)
    [soft] = mailgun.verify(mailgun_body(str(int(now)), severity="temporary"), {}, now)
    assert (hard.kind, soft.kind, hard.message_ref) == (
        "bounce_hard",
        "bounce_soft",
        "aicmo.abc@example.com",
    )


def test_mailgun_bad_signatures_are_refused() -> None:
    now = time.time()
    for body in (mailgun_body(str(int(now)), key="wrong"), mailgun_body(str(int(now) - 1000))):
        with pytest.raises(BadEventSignature):
            mailgun.verify(body, {}, now)


# -- SendGrid --------------------------------------------------------------------------------

SENDGRID = json.dumps(
    [
        {
            "email": "ada@example.com",
            "timestamp": 1764583200,
            "event": "spamreport",
            "sg_event_id": "sg-1",
            "sg_message_id": "abc.filter01",
            "smtp-id": "<aicmo.x@example.com>",
        },
        {
            "email": "bob@example.com",
            "timestamp": 1764583200,
            "event": "bounce",
            "type": "blocked",
            "sg_event_id": "sg-2",
        },
    ]
).encode()


def test_sendgrid_good_ecdsa_signature() -> None:
    now = time.time()
    stamp = str(int(now))
    events = sendgrid.verify(
        SENDGRID,
        {
            sendgrid.SIGNATURE_HEADER: sendgrid_sign(SG_KEY, stamp, SENDGRID),
            sendgrid.TIMESTAMP_HEADER: stamp,
        },
        now,
    )
    assert [(e.kind, e.message_ref, e.provider_message_id) for e in events] == [
        ("complaint", "<aicmo.x@example.com>", "abc"),
        ("bounce_soft", None, None),
    ]


def test_sendgrid_bad_signatures_are_refused() -> None:
    now = time.time()
    stamp = str(int(now))
    other, _ = sendgrid_keys()
    for headers, body in (
        (
            {
                sendgrid.SIGNATURE_HEADER: sendgrid_sign(other, stamp, SENDGRID),
                sendgrid.TIMESTAMP_HEADER: stamp,
            },
            SENDGRID,
        ),
        (
            {
                sendgrid.SIGNATURE_HEADER: sendgrid_sign(SG_KEY, stamp, SENDGRID),
                sendgrid.TIMESTAMP_HEADER: stamp,
            },
            SENDGRID[:-1] + b" ]",
        ),
        (
            {
                sendgrid.SIGNATURE_HEADER: sendgrid_sign(SG_KEY, stamp, SENDGRID),
                sendgrid.TIMESTAMP_HEADER: str(int(now) + 1),
            },
            SENDGRID,
        ),
    ):
        with pytest.raises(BadEventSignature):
            sendgrid.verify(body, headers, now)


# -- Postmark --------------------------------------------------------------------------------

POSTMARK = json.dumps(
    {
        "RecordType": "Bounce",
        "ID": 42,
        "Type": "HardBounce",
        "MessageID": "883953f4",
        "Email": "ada@example.com",
        "BouncedAt": "2026-12-01T13:28:10.2735393-04:00",
    }
).encode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_postmark_basic_auth() -> None:
    [event] = postmark.verify(POSTMARK, basic("pm", "pm-pass"), time.time())
    assert (event.kind, event.event_id, event.provider_message_id) == (
        "bounce_hard",
        "Bounce:42",
        "883953f4",
    )
    for headers in (basic("pm", "wrong"), {}, {"Authorization": "Basic !!!"}):
        with pytest.raises(BadEventSignature):
            postmark.verify(POSTMARK, headers, time.time())


# -- generic ---------------------------------------------------------------------------------

GENERIC = json.dumps(
    {
        "events": [
            {
                "id": "g1",
                "type": "complaint",
                "timestamp": 1764583200,
                "recipient": "ada@example.com",
            }
        ]
    }
).encode()


def test_generic_signed_form() -> None:
    now = time.time()
    [event] = generic.verify(
        GENERIC, {"X-Aicmo-Signature": generic.sign(GENERIC_SECRET, GENERIC, int(now))}, now
    )
    assert event.kind == "complaint"
    for header in (
        generic.sign("wrong", GENERIC, int(now)),
        generic.sign(GENERIC_SECRET, GENERIC, int(now) - 400),
        "",
    ):
        with pytest.raises(BadEventSignature):
            generic.verify(GENERIC, {"X-Aicmo-Signature": header}, now)


# -- SES through SNS ---------------------------------------------------------------------------

SES_BOUNCE = {
    "eventType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bouncedRecipients": [{"emailAddress": "ada@example.com"}],
        "timestamp": "2026-12-01T10:00:00.000Z",
    },
    "mail": {
        "messageId": "ses-1",
        "timestamp": "2026-12-01T09:59:00.000Z",
        "commonHeaders": {"messageId": "<aicmo.abc@example.com>"},
    },
}


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signature_versions_1_and_2_verify(sns: SnsCertServer, version: str) -> None:
    message = sns.message(SES_BOUNCE, f"sns-{version}", version=version)
    [event] = ses.verify(json.dumps(message).encode(), {}, time.time())
    assert (event.event_id, event.kind, event.message_ref, event.recipient) == (
        f"sns-{version}",
        "bounce_hard",
        "<aicmo.abc@example.com>",
        "ada@example.com",
    )


def test_sns_tampered_wrong_host_and_bad_version_are_refused(sns: SnsCertServer) -> None:
    good = sns.message(SES_BOUNCE, "sns-x")
    tampered = {**good, "Message": good["Message"].replace("Permanent", "Transient")}
    elsewhere = {
        **good,
        "SigningCertURL": "https://evil.example.com/SimpleNotificationService-1.pem",
    }
    http_url = {**good, "SigningCertURL": good["SigningCertURL"].replace("https", "http")}
    version = {**good, "SignatureVersion": "3"}
    old = sns.message(SES_BOUNCE, "sns-old", Timestamp="2020-01-01T00:00:00.000Z")
    for message in (tampered, elsewhere, http_url, version, old):
        with pytest.raises(BadEventSignature):
            ses.verify(json.dumps(message).encode(), {}, time.time())


def test_sns_subscription_confirmation_is_confirmed_on_the_sns_host(sns: SnsCertServer) -> None:
    message = sns.message(
        {},
        "sub-1",
        Type="SubscriptionConfirmation",
        Token="tok",
        SubscribeURL=f"{sns.base}/confirm?x=1",
    )
    message.pop("Subject", None)
    assert ses.verify(json.dumps(message).encode(), {}, time.time()) == []
    assert "/confirm?x=1" in sns.fetches


# -- nothing but refusals, whatever the bytes ---------------------------------------------------


def _mutations(seed: bytes, rng: random.Random) -> Iterator[bytes]:
    junk = [b"", b"{}", b"[]", b"null", b"[" * 5000, b'{"a":' * 100, b"\xff\xfe", b'"x"', b"1e999"]
    yield from junk
    while True:
        data = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        yield bytes(data[: rng.randint(0, len(data))])


@pytest.mark.parametrize(
    ("verify", "seed", "headers"),
    [
        (svix.verify, RESEND, lambda b: svix_headers(b, int(time.time()))),
        (mailgun.verify, mailgun_body(str(int(time.time()))), lambda b: {}),
        (postmark.verify, POSTMARK, lambda b: basic("pm", "pm-pass")),
        (
            generic.verify,
            GENERIC,
            lambda b: {"X-Aicmo-Signature": generic.sign(GENERIC_SECRET, b, int(time.time()))},
        ),
        (
            sendgrid.verify,
            SENDGRID,
            lambda b: {
                sendgrid.SIGNATURE_HEADER: "bm9wZQ==",
                sendgrid.TIMESTAMP_HEADER: str(int(time.time())),
            },
        ),
        (
            ses.verify,
            json.dumps({"Type": "Notification", "Message": "{}", "SignatureVersion": "2"}).encode(),
            lambda b: {},
        ),
    ],
    ids=["svix", "mailgun", "postmark", "generic", "sendgrid", "ses"],
)
def test_fuzzed_requests_are_only_ever_refused(verify: Any, seed: bytes, headers: Any) -> None:
    rng = random.Random(14)
    deadline = time.monotonic() + 8
    tried = 0
    for body in _mutations(seed, rng):
        if tried >= 3000 or time.monotonic() > deadline:
            break
        tried += 1
        # Only a refusal (a 4xx) may come out; pydantic's errors are ValueErrors too.
        with contextlib.suppress(EventRejected, ValueError):
            verify(body, headers(body), time.time())
    assert tried >= 500


def test_an_unconfigured_provider_refuses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AICMO_EMAIL_MAILGUN_SIGNING_KEY")
    reload_settings()
    with pytest.raises(ProviderUnconfigured):
        mailgun.verify(mailgun_body(str(int(time.time()))), {}, time.time())


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5ca.pem",
            True,
        ),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-a.pem", False),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem", False),
        ("https://evil.com/sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem", False),
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem?x=1", False),
    ],
)
def test_the_default_sns_certificate_url_pattern_trusts_only_sns_hosts(
    url: str, trusted: bool
) -> None:
    import re

    from aicmo.config import Settings

    default = Settings.model_fields["email_sns_cert_url_pattern"].default  # not the tests' own
    assert bool(re.fullmatch(default, url)) is trusted
