"""EMAIL_EVENT: one provider event (bounce, complaint, delivery, open, click) applied to its
message, keyed ``email_event:{provider}:{event_id}`` (see ``aicmo.cam.outcomes.events``)."""

from __future__ import annotations

from typing import Any

from aicmo.cam.outcomes import events
from aicmo.db import utcnow
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.registry import registry

__all__ = ["email_event"]


@registry.action(
    events.ACTION_TYPE,
    payload=events.EmailEventPayload,
)
def email_event(ctx: ActionContext, payload: events.EmailEventPayload) -> dict[str, Any]:
    """Record a provider's email event once and act on it (suppress, count, brake)."""
    return events.apply(ctx.session, payload, utcnow())
