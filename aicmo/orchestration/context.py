"""What a handler receives besides its payload."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.models import AOLAction


class ActionContext:
    """Everything a handler may use.

    ``session`` is in the transaction that also records SUCCESS: write through it and those
    writes happen exactly once. It is opened on first use, so a handler that writes nothing to
    the database costs no transaction of its own.
    """

    def __init__(
        self,
        action: AOLAction,
        proof_mode: bool,
        artifacts: ArtifactWriter,
        worker: str = "local",
        session: Session | None = None,
        session_factory: Callable[[], Session] | None = None,
    ) -> None:
        if session is None and session_factory is None:
            raise ValueError("ActionContext needs a session or a session_factory")
        self.action = action
        self.proof_mode = proof_mode
        self.artifacts = artifacts
        self.worker = worker
        self._session = session
        self._session_factory = session_factory
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"aicmo.actions.{action.action_type.lower()}"),
            {"action_id": action.id, "action_type": action.action_type},
        )

    @property
    def session(self) -> Session:
        if self._session is None:
            assert self._session_factory is not None
            self._session = self._session_factory()
        return self._session

    @property
    def session_used(self) -> bool:
        return self._session is not None

    @property
    def action_id(self) -> int:
        return self.action.id

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self.action.attempts

    @property
    def idempotency_key(self) -> str:
        """Hand this to external providers (Idempotency-Key header, Message-ID)."""
        return self.action.idempotency_key

    def extra(self, **values: Any) -> dict[str, Any]:
        return {"action_id": self.action.id, "action_type": self.action.action_type, **values}
