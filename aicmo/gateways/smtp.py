"""SmtpEmailSender: real SMTP with STARTTLS or implicit TLS, and login.

The Message-ID derives from the action's idempotency key (:func:`message_id_for`), so a mail
resent after a crash carries the same id and is recognisable as the same message.
One connection per message: a worker sends one email per action, and a fresh connection
never inherits a half-finished transaction from an earlier failure.
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path
from typing import Literal

from aicmo.gateways.errors import (
    GatewayPermanentError,
    GatewayTransientError,
    error_for_smtp_code,
)
from aicmo.gateways.messages import build_email
from aicmo.gateways.ports import OutgoingEmail, SendResult
from aicmo.orchestration.redaction import register_secret
from aicmo.ratelimit import Bucket, RateLimiter

Security = Literal["starttls", "ssl", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}


class SmtpEmailSender:
    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 20.0,
        ca_file: Path | None = None,
        limiter: RateLimiter | None = None,
        bucket: Bucket | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("SMTP login needs both a username and a password")
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security: Security = security
        self.username = username
        self._password = password
        register_secret(password)
        self.timeout = timeout
        self.ca_file = ca_file
        self.limiter = limiter
        self.bucket = bucket
        self.provider = f"smtp {host}:{self.port}"

    def __repr__(self) -> str:  # never the password
        return f"SmtpEmailSender({self.provider}, security={self.security})"

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._tls_context()
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            try:
                smtp.starttls(context=self._tls_context())
            except BaseException:
                smtp.close()
                raise
        return smtp

    def send(self, email: OutgoingEmail, idempotency_key: str) -> SendResult:
        message = build_email(email, idempotency_key)
        if self.limiter is not None and self.bucket is not None:
            self.limiter.acquire([(self.bucket, 1)])
        try:
            with self._connect() as smtp:
                if self.username is not None and self._password is not None:
                    smtp.login(self.username, self._password)
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused(exc.recipients) from None
        except smtplib.SMTPResponseException as exc:
            # Auth, sender, data, helo and connect refusals all carry the server's reply.
            raise error_for_smtp_code(self.provider, exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise GatewayPermanentError(
                self.provider, f"server does not support what is configured: {exc}"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise GatewayPermanentError(
                self.provider, f"TLS certificate not trusted: {exc.verify_message}"
            ) from None
        except OSError as exc:  # timeouts, resets, refused connections, disconnects
            raise GatewayTransientError(
                self.provider, f"network error: {type(exc).__name__}: {exc}"
            ) from None
        message_id = str(message["Message-ID"])
        if refused:
            # Some recipients took it: resending would duplicate it for them.
            return SendResult(
                external_id=message_id,
                detail=f"accepted, but refused for {sorted(refused)}",
                provider=self.provider,
            )
        return SendResult(external_id=message_id, detail="accepted", provider=self.provider)

    def _refused(
        self, recipients: dict[str, tuple[int, bytes]]
    ) -> GatewayTransientError | GatewayPermanentError:
        # The most hopeful reply decides: if any refusal is temporary, trying again may work.
        code, reply = min(recipients.values(), key=lambda item: item[0])
        return error_for_smtp_code(self.provider, code, reply)
