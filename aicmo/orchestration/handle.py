"""What ``task.delay(payload)`` returns: a handle on the action row, Celery-shaped.

There is no result backend: the ``aol_actions`` row is the record, so ``status`` and
``get()`` read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aicmo.db import session_scope
from aicmo.orchestration.errors import AOLError
from aicmo.orchestration.manager import get_action
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.status import ActionStatus


class ActionDidNotSucceed(AOLError):
    def __init__(self, action: AOLAction) -> None:
        self.action_id, self.status, self.last_error = action.id, action.status, action.last_error
        super().__init__(f"action {action.id} ended {action.status}: {action.last_error}")


@dataclass(frozen=True)
class ActionHandle:
    action_id: int
    idempotency_key: str
    action_type: str
    created: bool  # False when the key already existed and nothing new was sent

    @property
    def id(self) -> str:
        return f"aol-{self.action_id}"

    def fetch(self) -> AOLAction:
        with session_scope() as session:
            return get_action(session, self.action_id)

    @property
    def status(self) -> str:
        return self.fetch().status

    state = status

    def ready(self) -> bool:
        return ActionStatus(self.status).is_terminal

    def get(self, timeout: float | None = 30.0, interval: float = 0.1) -> dict[str, Any] | None:
        """Wait for the action to finish; return its result or raise if it did not succeed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            action = self.fetch()
            if action.status == ActionStatus.SUCCESS:
                return action.result_json
            if ActionStatus(action.status).is_terminal:
                raise ActionDidNotSucceed(action)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"action {self.action_id} still {action.status} after {timeout}s"
                )
            time.sleep(interval)
