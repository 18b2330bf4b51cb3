"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the tests, with login, STARTTLS or implicit
TLS, and scripted refusals:

* recipient ``busy@...``: 451 (temporary); ``nobody@...``: 550 (permanent)
* subject containing ``@@452@@`` / ``@@554@@``: that reply to DATA
* a wrong password: 535, and the reply echoes the password (the worst kind of server)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USERNAME = "mailer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA for the client)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


@dataclass
class Recorder:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A slow server: DATA is answered after this long (other sessions go on meanwhile).
    data_delay_seconds: float = 0.0
    data_started: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("busy@"):
            return "451 4.3.0 mailbox busy, try again later"
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_started.set()
        if self.data_delay_seconds:
            await asyncio.sleep(self.data_delay_seconds)
        data = (
            envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        )
        if b"@@452@@" in data:
            return "452 4.3.1 insufficient system storage"
        if b"@@554@@" in data:
            return "554 5.7.1 message rejected as spam"
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), data))
        return "250 Message accepted for delivery"


class FakeSMTPServer:
    def __init__(
        self,
        password: str,
        *,
        security: str = "none",
        cert: tuple[Path, Path] | None = None,
        data_delay_seconds: float = 0.0,
    ) -> None:
        self.password = password
        self.recorder = Recorder(data_delay_seconds=data_delay_seconds)
        self.port = free_port()
        kwargs: dict[str, Any] = {
            "authenticator": self._authenticate,
            # aiosmtpd only counts STARTTLS as TLS; an implicit-TLS connection is TLS anyway.
            "auth_require_tls": security == "starttls",
        }
        context = None
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        if security == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        self.controller = Controller(
            self.recorder,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=context if security == "ssl" else None,
            server_hostname="localhost",
            **kwargs,
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USERNAME
            and auth_data.password.decode() == self.password
        )
        if ok:
            return AuthResult(success=True)
        given = auth_data.password.decode() if isinstance(auth_data, LoginPassword) else "?"
        return AuthResult(
            success=False, handled=False, message=f"535 5.7.8 bad password {given} for {USERNAME}"
        )

    @property
    def received(self) -> list[Received]:
        with self.recorder.lock:
            return list(self.recorder.received)

    def start(self) -> FakeSMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class SilentServer:
    """Accepts TCP connections and never says a word (no SMTP banner)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def start(self) -> SilentServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
