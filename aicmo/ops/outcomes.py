"""The outcome loop's operations: unsubscribe, click, provider events, domain brakes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aicmo.cam.models import OutreachMessage
from aicmo.cam.outcomes import brakes, events, tokens
from aicmo.cam.outcomes import unsubscribe as unsub
from aicmo.cam.outcomes.models import EventKind
from aicmo.cam.outcomes.record import record_event
from aicmo.db import session_scope, utcnow
from aicmo.gateways.email_events import ProviderUnconfigured, verifier


def unsubscribe_preview(token: str) -> dict[str, Any]:
    """What the confirmation page shows; raises tokens.BadToken (nothing written)."""
    with session_scope() as session:
        _claims, lead = unsub.check(session, token)
        return {"address": unsub.mask(lead.email) if lead.email else None}


def unsubscribe(token: str) -> dict[str, Any]:
    """Suppress at once (one transaction); raises tokens.BadToken and changes nothing."""
    with session_scope() as session:
        done = unsub.unsubscribe(session, token, utcnow())
    return asdict(done)


def click(token: str) -> str:
    """Count one click per message and link; the URL to redirect to (bound in the token)."""
    claims = tokens.read(token, "c")
    assert claims.url is not None
    with session_scope() as session:
        message = session.get(OutreachMessage, claims.message_id)
        if message is None or message.campaign_id != claims.campaign_id:
            raise unsub.UnknownRecipient("this link names no message we sent")
        digest = hashlib.sha256(claims.url.encode()).hexdigest()[:24]
        now = utcnow()
        record_event(
            session,
            provider="aicmo",
            event_id=f"click:{claims.message_id}:{digest}",
            kind=EventKind.CLICK,
            occurred_at=now,
            now=now,
            message_id=message.id,
            campaign_id=message.campaign_id,
            url=claims.url,
        )
    return claims.url


def receive_email_events(provider: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """Verify a provider's webhook and enqueue one EMAIL_EVENT action per event (by its id)."""
    verify = verifier(provider)
    if verify is None:
        raise ProviderUnconfigured(f"unknown email provider {provider!r}")
    found = verify(body, headers, time.time())
    payloads = [
        events.EmailEventPayload.model_validate({**asdict(e), "provider": provider}) for e in found
    ]
    with session_scope() as session:
        enqueued = events.enqueue(session, payloads)
    return {
        "events": len(payloads),
        "created": sum(1 for item in enqueued if item.created),
        "action_ids": [item.action_id for item in enqueued],
    }


def domain_brakes() -> list[dict[str, Any]]:
    with session_scope() as session:
        return [
            {"domain": b.domain, "reason": b.reason, "braked_at_utc": b.braked_at_utc.isoformat()}
            for b in brakes.list_domain_brakes(session)
        ]


def release_domain(domain: str, by: str | None = None) -> bool:
    with session_scope() as session:
        return brakes.release_domain(session, domain, by or "unknown", utcnow())
