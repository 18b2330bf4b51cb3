"""SEND_EMAIL: send one email (proof: an .eml artifact; live: the configured sender)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from aicmo.gateways.factory import default_sender, email_sender
from aicmo.gateways.ports import OutgoingEmail
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.registry import registry

# Deliberately simple: the provider is the real judge of an address; this catches typos.
EmailAddress = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=320, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$"
    ),
]
DEFAULT_SENDER = "aicmo@example.com"


class SendEmailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: EmailAddress
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998, pattern=r"^[^\r\n]*$")]
    body: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]
    html: str | None = None
    from_address: EmailAddress | None = None
    reply_to: EmailAddress | None = None


@registry.action(
    "SEND_EMAIL",
    payload=SendEmailPayload,
)
def send_email(ctx: ActionContext, payload: SendEmailPayload) -> dict[str, Any]:
    """Send one email."""
    sender = email_sender(ctx.proof_mode, ctx.artifacts)
    sent = sender.send(
        OutgoingEmail(
            to=payload.to,
            subject=payload.subject,
            body=payload.body,
            html=payload.html,
            from_address=payload.from_address or default_sender(),
            reply_to=payload.reply_to,
        ),
        ctx.idempotency_key,
    )
    return {"to": payload.to, "message_id": sent.external_id, "proof_mode": ctx.proof_mode}
