"""Building RFC 5322 messages whose Message-ID derives from the idempotency key."""

from __future__ import annotations

import hashlib
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

from aicmo.gateways.ports import OutgoingEmail


def message_id_for(idempotency_key: str, sender: str) -> str:
    """The same key always gives the same Message-ID, so a resend is recognisable."""
    domain = sender.rpartition("@")[2] or "aicmo.local"
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]
    return f"<aicmo.{digest}@{domain}>"


# RFC 5322's own line limit: at 78 a header holding one long word (a List-Unsubscribe URL with
# its signed token) would be folded into RFC 2047 encoded words, which no mailbox reads as a URL.
POLICY = policy.default.clone(max_line_length=998)


def build_email(email: OutgoingEmail, idempotency_key: str) -> EmailMessage:
    message = EmailMessage(policy=POLICY)
    message["From"] = email.from_address
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id_for(idempotency_key, email.from_address)
    message["X-Idempotency-Key"] = idempotency_key
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.body)
    if email.html:
        message.add_alternative(email.html, subtype="html")
    return message
