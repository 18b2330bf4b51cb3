"""A dispatcher that records instead of publishing: for tests of what the core decides to
send, not of the broker (those use the real CeleryDispatcher and Redis)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from aicmo.orchestration.dispatch import Dispatch


class RecordingDispatcher:
    def __init__(self, depth: int = 0, reset: bool = False) -> None:
        self.sent: list[Dispatch] = []
        self.depth = depth
        self.reset = reset
        self._lock = threading.Lock()

    def publish(self, items: Sequence[Dispatch]) -> None:
        with self._lock:
            self.sent.extend(items)

    def queue_depth(self, queue: str) -> int | None:
        return self.depth

    def broker_was_reset(self) -> bool:
        reset, self.reset = self.reset, False
        return reset

    @property
    def ids(self) -> list[int]:
        return [item.action_id for item in self.sent]
