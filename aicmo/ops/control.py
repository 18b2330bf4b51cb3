"""Pause and resume workers (all action types, or one)."""

from __future__ import annotations

from typing import Any

from aicmo.db import db_now, session_scope
from aicmo.orchestration import manager


def _scope(action_type: str | None) -> str | None:
    return action_type.strip().upper() if action_type else None


def pause(action_type: str | None, reason: str | None, by: str) -> dict[str, Any]:
    """Workers leave matching actions unclaimed (no attempt spent) until ``resume``."""
    scope = _scope(action_type)
    with session_scope() as session:
        manager.pause(session, scope, reason=reason, by=by)
    return {"paused": scope or "all", "reason": reason}


def resume(action_type: str | None, by: str) -> dict[str, Any]:
    """Lift a pause and send at once the actions it held back (unless another pause holds)."""
    from aicmo.orchestration.sweeper import Sweeper

    scope = _scope(action_type)
    with session_scope() as session:
        held = manager.resume(session, scope, by=by)
    sent = 0
    if held:
        sweeper = Sweeper()
        paused_all, paused_types = sweeper.paused_scopes()
        if not paused_all:
            sent = sweeper.dispatch_due(db_now(sweeper.engine()), exclude_types=paused_types)
    return {"resumed": scope or "all", "held": held, "sent": sent}
