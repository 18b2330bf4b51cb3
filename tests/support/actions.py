"""Action types that exist only for tests: they fail, hang, kill their worker, or record an
effect in ``test_effects`` (a ledger with NO unique constraint, so a duplicate run shows up
as a second row instead of being hidden)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.errors import PermanentError, TransientError
from aicmo.orchestration.registry import Concurrency, registry
from aicmo.orchestration.retry import RetryPolicy


def text(statement: str) -> Any:
    # SQLAlchemy on first use, as aicmo's own action modules do: a worker's main process
    # imports this module and never runs a handler.
    from sqlalchemy import text as sql_text

    return sql_text(statement)


FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, factor=2.0, max_delay=2.0, jitter=0.0)

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS test_effects (
    id {id_type},
    tag TEXT NOT NULL,
    action_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT
)
"""


class EffectPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str
    sleep: float = 0.0
    fail_first: int = 0  # fail transiently on the first N attempts
    permanent: bool = False  # fail permanently


def _record(ctx: ActionContext, tag: str) -> None:
    ctx.session.execute(
        text(
            "INSERT INTO test_effects (tag, action_id, attempt, worker) "
            "VALUES (:tag, :action_id, :attempt, :worker)"
        ),
        {"tag": tag, "action_id": ctx.action_id, "attempt": ctx.attempt, "worker": ctx.worker},
    )


@registry.action(
    "T_EFFECT", payload=EffectPayload, retry=FAST_RETRY, soft_time_limit=8, time_limit=10
)
def effect(ctx: ActionContext, payload: EffectPayload) -> dict[str, Any]:
    """Record one effect row in the handler's transaction, after optional sleep/failures."""
    if payload.sleep:
        time.sleep(payload.sleep)
    if payload.permanent:
        raise PermanentError(f"{payload.tag}: refused for good")
    _record(ctx, payload.tag)
    if ctx.attempt <= payload.fail_first:
        # The effect row above must vanish with the rollback: DB effects are exactly-once.
        raise TransientError(f"{payload.tag}: flaky failure on attempt {ctx.attempt}")
    return {"tag": payload.tag, "attempt": ctx.attempt}


class TagPayload(BaseModel):
    tag: str = "x"


@registry.action(
    "T_ALWAYS_FAIL", payload=TagPayload, retry=FAST_RETRY, soft_time_limit=8, time_limit=10
)
def always_fail(ctx: ActionContext, payload: TagPayload) -> None:
    """Fail transiently, every time."""
    raise TransientError(f"{payload.tag}: upstream unavailable (attempt {ctx.attempt})")


# Types on the "isolated" queue run only on workers a test starts for itself (the shared
# worker consumes "aol" only), so a test can kill, starve or flush them freely.
ISOLATED = "isolated"


@registry.action(
    "T_KILL", payload=TagPayload, retry=FAST_RETRY, soft_time_limit=2, time_limit=3, queue=ISOLATED
)
def kill_worker(ctx: ActionContext, payload: TagPayload) -> None:
    """A poison action: kills the process running it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


# Long enough between attempts to see a retry's message waiting on the worker's ETA timer.
SLOW_RETRY = RetryPolicy(max_attempts=3, base_delay=6.0, factor=1.0, max_delay=6.0, jitter=0.0)


@registry.action(
    "T_SLOW_RETRY",
    payload=EffectPayload,
    retry=SLOW_RETRY,
    soft_time_limit=8,
    time_limit=10,
    queue=ISOLATED,
)
def slow_retry(ctx: ActionContext, payload: EffectPayload) -> dict[str, Any] | None:
    """Like T_EFFECT, 6 s between attempts."""
    return effect(ctx, payload)


class SleepPayload(BaseModel):
    tag: str = "x"
    seconds: float = 60.0


@registry.action(
    "T_HANG",
    payload=SleepPayload,
    retry=FAST_RETRY,
    soft_time_limit=1,
    time_limit=3,
    queue=ISOLATED,
)
def hang(ctx: ActionContext, payload: SleepPayload) -> None:
    """Sleep far past the soft time limit."""
    time.sleep(payload.seconds)


@registry.action(
    "T_SLOW_EFFECT",
    payload=EffectPayload,
    retry=FAST_RETRY,
    soft_time_limit=3,
    time_limit=4,
    queue=ISOLATED,
)
def slow_effect(ctx: ActionContext, payload: EffectPayload) -> dict[str, Any] | None:
    """Like T_EFFECT but with a short lease, for worker-kill tests."""
    return effect(ctx, payload)


@registry.action("T_GATED", payload=TagPayload, retry=FAST_RETRY, soft_time_limit=8, time_limit=10)
def gated(ctx: ActionContext, payload: TagPayload) -> dict[str, Any]:
    """Fail transiently until a row ``open:<tag>`` exists in test_effects (for replay tests)."""
    is_open = ctx.session.execute(
        text("SELECT 1 FROM test_effects WHERE tag = :t"), {"t": f"open:{payload.tag}"}
    ).first()
    if not is_open:
        raise TransientError(f"{payload.tag}: gate closed")
    _record(ctx, payload.tag)
    return {"tag": payload.tag}


class NoopPayload(BaseModel):
    n: int = 0


@registry.action("T_NOOP", payload=NoopPayload, retry=FAST_RETRY)
def noop(ctx: ActionContext, payload: NoopPayload) -> None:
    """Do nothing (benchmarks and plumbing tests)."""


@registry.action(
    "T_ISOLATED_EFFECT",
    payload=EffectPayload,
    retry=FAST_RETRY,
    soft_time_limit=8,
    time_limit=10,
    queue=ISOLATED,
)
def isolated_effect(ctx: ActionContext, payload: EffectPayload) -> dict[str, Any] | None:
    """T_EFFECT on the isolated queue."""
    return effect(ctx, payload)


class DeferPayload(BaseModel):
    tag: str
    defer_times: int


@registry.action(
    "T_DEFER", payload=DeferPayload, retry=FAST_RETRY, soft_time_limit=8, time_limit=10
)
def defer(ctx: ActionContext, payload: DeferPayload) -> dict[str, Any]:
    """Find no room (like a full rate limit) the first N times, then record the effect."""
    import redis as redis_lib

    from aicmo.config import get_settings
    from aicmo.orchestration.errors import Deferred

    turns = redis_lib.Redis.from_url(get_settings().broker_url).incr(f"t-defer:{payload.tag}")
    if int(turns) <= payload.defer_times:
        raise Deferred(f"{payload.tag}: no room yet (turn {turns})", retry_after=0.05)
    _record(ctx, payload.tag)
    return {"turns": turns}


@registry.action(
    "T_SQL_ERROR",
    payload=TagPayload,
    retry=RetryPolicy(max_attempts=1, base_delay=0.1, factor=1.0, max_delay=0.1, jitter=0.0),
    queue=ISOLATED,
)
def sql_error(ctx: ActionContext, payload: TagPayload) -> None:
    """A handler whose SQL fails with the payload (think: a lead's e-mail) as a parameter."""
    ctx.session.execute(
        text("INSERT INTO test_effects (tag, action_id, attempt) VALUES (:tag, NULL, 1)"),
        {"tag": payload.tag},
    )


class KeyedPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str
    tag: str = "x"
    sleep: float = 0.3


KEYED_LIMIT = 2


@registry.action(
    "T_KEYED",
    payload=KeyedPayload,
    retry=FAST_RETRY,
    soft_time_limit=8,
    time_limit=10,
    concurrency=Concurrency("account", KEYED_LIMIT),
)
def keyed(ctx: ActionContext, payload: KeyedPayload) -> dict[str, Any]:
    """Record how many actions of its account are RUNNING (itself included), then sleep."""
    running = ctx.session.execute(
        text(
            "SELECT count(*) FROM aol_actions WHERE action_type = 'T_KEYED' "
            "AND status = 'RUNNING' AND payload_json->>'account' = :account"
        ),
        {"account": payload.account},
    ).scalar()
    _record(ctx, f"{payload.account}:{running}")
    time.sleep(payload.sleep)
    return {"account": payload.account}


@registry.action(
    "T_KEYED_ISOLATED",
    payload=KeyedPayload,
    retry=FAST_RETRY,
    soft_time_limit=8,
    time_limit=10,
    queue=ISOLATED,
    concurrency=Concurrency("account", KEYED_LIMIT),
)
def keyed_isolated(ctx: ActionContext, payload: KeyedPayload) -> dict[str, Any]:
    """T_KEYED on the queue only a test's own workers read (for worker-kill tests)."""
    time.sleep(payload.sleep)
    return {"account": payload.account}
