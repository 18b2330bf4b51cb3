"""The hot path's own psycopg connection (aicmo.orchestration.store.DirectConnection) after
a statement was interrupted: a soft time limit raises from a signal handler in the middle of
a statement, and the next action of that process must still get a working connection."""

from __future__ import annotations

import signal
import time
from types import FrameType

import pytest

from aicmo.db import get_engine
from aicmo.orchestration.store import DirectConnection


class Interrupted(Exception):
    """Stands for Celery's SoftTimeLimitExceeded: raised from a signal handler."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def test_a_statement_interrupted_by_a_signal_leaves_a_working_connection(
    database_url: str,
) -> None:
    direct = DirectConnection(get_engine(database_url))
    assert direct.fetchone("SELECT 1", {}, retry=False) == (1,)
    previous = signal.signal(signal.SIGALRM, _raise)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            direct.fetchone("SELECT pg_sleep(3)", {}, retry=False)
        assert time.monotonic() - started < 2.5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Before the fix: "another command is already in progress" (or a 3 s wait for it).
    started = time.monotonic()
    assert direct.fetchone("SELECT 2", {}, retry=False) == (2,)
    assert time.monotonic() - started < 2.0
    direct.close()
