"""What a handler receives besides its payload."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aicmo.orchestration.artifacts import ArtifactWriter
from aicmo.orchestration.errors import LeaseLost

if TYPE_CHECKING:
    # Not at run time: action modules import this module, and a worker's main process
    # imports action modules, but only a handler that uses ``session`` needs the ORM.
    from sqlalchemy.orm import Session

    from aicmo.orchestration.models import AOLAction


@dataclass
class RunningAction:
    """The claimed row as the executor knows it, without the ORM: what a handler reads from
    ``ctx.action`` (a direct call hands it the caller's :class:`AOLAction` instead)."""

    id: int
    idempotency_key: str
    action_type: str
    payload_json: dict[str, Any]
    status: str
    attempts: int
    max_attempts: int
    not_before_utc: datetime
    created_at_utc: datetime
    claimed_by: str | None


class ActionContext:
    """Everything a handler may use.

    ``session`` is in the transaction that also records SUCCESS: write through it and those
    writes happen exactly once. It is opened on first use, so a handler that writes nothing to
    the database costs no transaction of its own.

    No transaction may stay open across I/O (on SQLite it locks the whole database): a handler
    that calls out reads and reserves in :meth:`guarded` first, does its network call with no
    transaction open, and only then touches ``session``.
    """

    def __init__(
        self,
        action: AOLAction | RunningAction,
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

    @contextmanager
    def guarded(self) -> Iterator[Session]:
        """A short transaction of its own, committed when the block ends, in which this run
        still holds its claim: the action row is locked (PostgreSQL; SQLite's write lock does
        the same) and must be RUNNING under this run's fencing token, else :class:`LeaseLost`
        and nothing is written. For what must be read or committed before the handler's I/O
        (a reservation), or must stick whatever the outcome (a message refused for good).

        Never call it while ``session`` is in use: on SQLite that waits on itself. A context
        made for a direct call (no claim, one caller's session) yields that session instead.
        """
        if self._session_factory is None:
            yield self.session
            return
        from sqlalchemy import select

        from aicmo.orchestration.models import AOLAction

        with self._session_factory() as session, session.begin():
            held = session.execute(
                select(AOLAction.id)
                .where(
                    AOLAction.id == self.action.id,
                    AOLAction.status == "RUNNING",
                    AOLAction.claimed_by == self.action.claimed_by,
                )
                .with_for_update()
            ).first()
            if held is None:
                raise LeaseLost(
                    f"action {self.action.id}: claim {self.action.claimed_by} is no longer held"
                )
            yield session

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
