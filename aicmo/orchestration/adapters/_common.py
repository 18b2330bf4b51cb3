"""Helpers the adapters share."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicmo.config import get_settings
from aicmo.orchestration.artifacts import ArtifactWriter, artifact_fields
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.manager import get_action
from aicmo.orchestration.models import AOLExecutionLog
from aicmo.orchestration.status import LogEvent

__all__ = ["artifact_fields", "context_for", "run_number"]


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


def run_number(ctx: ActionContext) -> int:
    """Which run of the action this is, counting runs before a replay (a replay resets
    ``attempts``; the execution log keeps every claim). A gateway that cannot pass an
    idempotency key looks for an earlier run's post when this is above 1. Read in its own
    short transaction when the handler's is not open yet, so none spans the post."""
    query = (
        select(func.count())
        .select_from(AOLExecutionLog)
        .where(
            AOLExecutionLog.action_id == ctx.action_id, AOLExecutionLog.event == LogEvent.CLAIMED
        )
    )
    if ctx.session_used:
        claims = ctx.session.scalar(query)
    else:
        with Session(ctx.session.get_bind()) as read, read.begin():
            claims = read.scalar(query)
    return max(ctx.attempt, int(claims or 0))
