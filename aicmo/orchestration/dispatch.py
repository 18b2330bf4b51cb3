"""How the core asks the broker to deliver "action N is ready" hints.

The core only knows this protocol. The Celery layer installs the real dispatcher when the
app module (``AICMO_CELERY_APP``, default ``tasks``) is imported; the core imports that module
by name on first use, the way ``celery -A tasks`` does, so it never depends on it statically.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aicmo.config import get_settings


@dataclass(frozen=True, slots=True)
class Dispatch:
    action_id: int
    action_type: str
    countdown: float = 0.0  # seconds; never more than the dispatch horizon
    # The broker's message priority (Redis: 0 is first; see BULK_PRIORITY). None: 0.
    priority: int | None = None
    # Sent by a bulk operation (enqueue_many, the sweeper, a replay of many): may share a
    # message with others of its type (aicmo.orchestration.batch_plan). A single enqueue is
    # a message of its own, also when several are committed together: a batch runs its
    # actions one after another in one process, which is right for bulk work, not for the
    # handful of actions an application enqueues and expects to run side by side.
    batchable: bool = False


# A bulk campaign's share beyond its fair share is sent at this priority: on Redis a worker
# pops priority 0 (everything else, transactional mail included) before any of it.
BULK_PRIORITY = 6


class Dispatcher(Protocol):
    def publish(self, items: Sequence[Dispatch]) -> None:
        """Send one message per item. Raises if the broker refused or was unreachable."""

    def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue``, or None when the broker cannot tell."""

    def broker_was_reset(self) -> bool:
        """True when the broker lost its data since the last call (flush, restart without
        persistence, wiped folder); the next call returns False again."""


_installed: Dispatcher | None = None


def install_dispatcher(dispatcher: Dispatcher | None) -> None:
    global _installed
    _installed = dispatcher


def get_dispatcher() -> Dispatcher:
    if _installed is None:
        importlib.import_module(get_settings().celery_app)
    if _installed is None:
        raise RuntimeError(
            f"importing {get_settings().celery_app!r} installed no dispatcher; "
            "set AICMO_CELERY_APP to the module that builds the Celery app"
        )
    return _installed
