"""Helpers the adapters share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import model_validator
from sqlalchemy import func, select

from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.models import AOLExecutionLog
from aicmo.orchestration.status import LogEvent

__all__ = ["original_keys", "run_number"]

# The original's daemon added the action's key to every payload it handed a handler.
ALWAYS_IGNORED = frozenset({"idempotency_key"})


def original_keys(*, ignored: Iterable[str] = (), renamed: Mapping[str, str] | None = None) -> Any:
    """A pydantic "before" model validator accepting the keys the original AICMO put in this
    type's payloads: ``ignored`` ones (and ``idempotency_key``) are dropped, ``renamed`` ones
    are read under their new name. Any other unknown key is still refused (``extra="forbid"``),
    so a typo stays an error. Use as ``accept_original_keys = original_keys(...)`` in the
    payload model's body."""
    dropped = ALWAYS_IGNORED | frozenset(ignored)
    aliases = dict(renamed or {})
    known = dropped | aliases.keys()

    def accept(cls: Any, data: Any) -> Any:
        if not isinstance(data, dict) or known.isdisjoint(data):
            return data
        cleaned = {key: value for key, value in data.items() if key not in known}
        for old, new in aliases.items():
            if old not in data:
                continue
            if new in cleaned and cleaned[new] != data[old]:
                raise ValueError(f"{old} (the original's name for {new}) disagrees with {new}")
            cleaned[new] = data[old]
        return cleaned

    return model_validator(mode="before")(classmethod(accept))  # type: ignore[arg-type]


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
        with ctx.guarded() as read:
            claims = read.scalar(query)
    return max(ctx.attempt, int(claims or 0))
