"""SmtpEmailSender against a real local SMTP server (aiosmtpd): STARTTLS, implicit TLS and
login; the mail arrives with the right headers; 4xx/5xx replies are classified; and SEND_EMAIL's
handler run by a real live-mode worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from aicmo.gateways.errors import BadCredentials, GatewayPermanentError, GatewayTransientError
from aicmo.gateways.messages import message_id_for
from aicmo.gateways.ports import OutgoingEmail
from aicmo.gateways.smtp import SmtpEmailSender
from aicmo.orchestration.queue import ActionQueue
from tests.conftest import Book
from tests.support.fake_smtp import USERNAME, FakeSMTPServer, SilentServer, make_certificate
from tests.support.gateway_actions import GATEWAYS_QUEUE, live_worker_env, route_gateways_queue
from tests.support.processes import CeleryProcess, worker

pytestmark = pytest.mark.usefixtures("clean")

PASSWORD = "smtp-pass-9c1e5b7d"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def starttls_server(cert: tuple[Path, Path]) -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer(PASSWORD, security="starttls", cert=cert).start()
    yield server
    server.stop()


def email(to: str = "ada@example.com", subject: str = "Hello Ada") -> OutgoingEmail:
    return OutgoingEmail(
        to=to,
        subject=subject,
        body="Hi Ada,\nwe shipped the thing.\n",
        from_address="team@aicmo.test",
        reply_to="replies@aicmo.test",
    )


def sender(
    server: FakeSMTPServer, cert: tuple[Path, Path], password: str = PASSWORD, **kw: Any
) -> SmtpEmailSender:
    options: dict[str, Any] = {
        "port": server.port,
        "security": "starttls",
        "username": USERNAME,
        "password": password,
        "ca_file": cert[0],
        "timeout": 5.0,
    }
    options.update(kw)
    return SmtpEmailSender("127.0.0.1", **options)


def test_mail_arrives_over_starttls_with_login_and_the_right_headers(
    starttls_server: FakeSMTPServer, cert: tuple[Path, Path]
) -> None:
    before = len(starttls_server.received)
    result = sender(starttls_server, cert).send(email(), "welcome-ada")

    [got] = starttls_server.received[before:]
    message = got.message
    expected_id = message_id_for("welcome-ada", "team@aicmo.test")
    assert result.external_id == message["Message-ID"] == expected_id
    assert message["X-Idempotency-Key"] == "welcome-ada"
    assert (message["From"], message["To"], message["Subject"]) == (
        "team@aicmo.test",
        "ada@example.com",
        "Hello Ada",
    )
    assert message["Reply-To"] == "replies@aicmo.test"
    assert message["Date"]
    assert "we shipped the thing" in message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert (got.mail_from, got.rcpt_tos) == ("team@aicmo.test", ["ada@example.com"])

    # A resend of the same action carries the same Message-ID: recognisable as the same mail.
    sender(starttls_server, cert).send(email(), "welcome-ada")
    assert starttls_server.received[-1].message["Message-ID"] == expected_id


def test_implicit_tls(cert: tuple[Path, Path]) -> None:
    server = FakeSMTPServer(PASSWORD, security="ssl", cert=cert).start()
    try:
        result = sender(server, cert, security="ssl").send(email(), "tls-1")
        assert [r.message["Message-ID"] for r in server.received] == [result.external_id]
    finally:
        server.stop()


def test_an_untrusted_certificate_is_permanent(starttls_server: FakeSMTPServer) -> None:
    untrusting = SmtpEmailSender(
        "127.0.0.1", port=starttls_server.port, username=USERNAME, password=PASSWORD, timeout=5
    )
    with pytest.raises(GatewayPermanentError, match="certificate not trusted"):
        untrusting.send(email(), "k-cert")


@pytest.mark.parametrize(
    ("to", "subject", "error", "code"),
    [
        ("busy@example.com", "Hello", GatewayTransientError, 451),
        ("nobody@example.com", "Hello", GatewayPermanentError, 550),
        ("ada@example.com", "Full @@452@@", GatewayTransientError, 452),
        ("ada@example.com", "Spam @@554@@", GatewayPermanentError, 554),
    ],
)
def test_smtp_replies_are_classified(
    starttls_server: FakeSMTPServer,
    cert: tuple[Path, Path],
    to: str,
    subject: str,
    error: type[Exception],
    code: int,
) -> None:
    with pytest.raises(error) as raised:
        sender(starttls_server, cert).send(email(to, subject), "k-refused")
    assert type(raised.value) is error
    assert getattr(raised.value, "status", None) == code
    assert f"SMTP {code}" in str(raised.value)


def test_a_wrong_password_is_bad_credentials_and_never_shown(
    starttls_server: FakeSMTPServer, cert: tuple[Path, Path]
) -> None:
    wrong = "wrong-pass-3e8a1f"
    with pytest.raises(BadCredentials, match="SMTP 535") as raised:
        sender(starttls_server, cert, password=wrong).send(email(), "k-auth")
    assert "bad password *** for mailer" in str(raised.value)  # the server echoed it
    assert wrong not in str(raised.value) and wrong not in repr(raised.value)


def test_a_server_that_never_answers_is_transient_at_the_timeout() -> None:
    silent = SilentServer().start()
    try:
        started = time.monotonic()
        with pytest.raises(GatewayTransientError, match="network error"):
            SmtpEmailSender("127.0.0.1", port=silent.port, security="none", timeout=1.0).send(
                email(), "k-silent"
            )
        assert 0.9 <= time.monotonic() - started < 3.0
    finally:
        silent.stop()


def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(GatewayTransientError, match="ConnectionRefusedError"):
        SmtpEmailSender("127.0.0.1", port=9, security="none", timeout=2).send(email(), "k-down")


# -- SEND_EMAIL's handler in a real live-mode worker ---------------------------------------


@pytest.fixture(scope="module")
def live_worker(
    starttls_server: FakeSMTPServer, cert: tuple[Path, Path], celery_app: Any, log_dir: Path
) -> Iterator[CeleryProcess]:
    route_gateways_queue(celery_app)
    env = live_worker_env(
        smtp_host="127.0.0.1",
        smtp_port=str(starttls_server.port),
        smtp_security="starttls",
        smtp_username=USERNAME,
        smtp_password=PASSWORD,
        smtp_ca_file=str(cert[0]),
        smtp_timeout_seconds="5",
        email_from="campaigns@aicmo.test",
    )
    process = worker(log_dir, concurrency=1, env=env, extra=["-Q", GATEWAYS_QUEUE]).start()
    yield process
    process.stop()


def send(session: Session, to: str, key: str) -> int:
    with session.begin():
        return ActionQueue.enqueue_action(
            session, "T_GW_EMAIL", {"to": to, "subject": "Hi", "body": "Hello there"}, key
        ).id


def test_send_email_action_delivers_with_its_key_as_message_id(
    live_worker: CeleryProcess, starttls_server: FakeSMTPServer, session: Session, book: Book
) -> None:
    before = len(starttls_server.received)
    action_id = send(session, "grace@example.com", "mail-grace-1")
    done = book.wait_status(action_id, "SUCCESS", timeout=15)
    [got] = starttls_server.received[before:]
    assert got.message["From"] == "campaigns@aicmo.test"  # AICMO_EMAIL_FROM
    assert got.message["Message-ID"] == message_id_for("mail-grace-1", "campaigns@aicmo.test")
    assert done.result_json["message_id"] == got.message["Message-ID"]


def test_send_email_action_retries_a_4xx_and_fails_a_5xx(
    live_worker: CeleryProcess, session: Session, book: Book
) -> None:
    busy = send(session, "busy@example.com", "mail-busy")
    nobody = send(session, "nobody@example.com", "mail-nobody")
    retry = book.wait_status(busy, "RETRY", timeout=15)
    failed = book.wait_status(nobody, "FAILED", timeout=15)
    assert "SMTP 451" in (retry.last_error or "")
    assert failed.attempts == 1 and "SMTP 550" in (failed.last_error or "")
