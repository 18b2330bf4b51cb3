"""The test runs' own Redis database numbers survive a Redis restart (tests/support/services).

Every chaos scenario that restarts Redis wipes every key, the runs' number locks with them; a
pytest started afterwards (tests/hosts/test_pgbouncer.py runs the engine suite as a nested
run) then took the number of the run still going, and the two shared queues: the outer run's
worker took the inner run's messages (an action of the inner run stayed READY)."""

from __future__ import annotations

import pytest
import redis

from tests.support import services

pytestmark = pytest.mark.chaos


def test_a_run_started_after_a_redis_restart_gets_a_number_of_its_own() -> None:
    mine = services.claim_redis_db("this-run")
    try:
        locks = redis.Redis.from_url(f"{services.REDIS_URL}/0")
        held = {int(k.rsplit(b":", 1)[1]) for k in locks.scan_iter("aicmo:test-lock:*")}
        assert mine in held  # this session's own number too
        services.restart_redis()
        theirs = services.claim_redis_db("a-later-run")
        services.release_redis_db(theirs, "a-later-run")
        assert theirs not in held, f"number {theirs} was already this process's"
    finally:
        services.release_redis_db(mine, "this-run")
