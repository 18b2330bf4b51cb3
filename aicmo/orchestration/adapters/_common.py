"""Helpers the adapters share."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aicmo.config import get_settings
from aicmo.orchestration.artifacts import ArtifactWriter, artifact_fields
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.manager import get_action

__all__ = ["artifact_fields", "context_for"]


def context_for(session: Session, action_id: int, proof_mode: bool) -> ActionContext:
    """An ActionContext for calling a handler directly, outside a worker (the seed's API)."""
    action = get_action(session, action_id)
    return ActionContext(
        action=action,
        session=session,
        proof_mode=proof_mode,
        artifacts=ArtifactWriter(
            get_settings().artifact_dir, action.action_type, action.idempotency_key
        ),
        worker="direct",
    )
