"""Batched dispatch, the worker's half: one broker message carries up to ``batch_size`` ids of
one action type (how a publish is cut into messages: aicmo.orchestration.batch_plan). A type
with a concurrency key is never batched (its per-action claim takes a slot or parks the
action, which a batch claim would bypass).

How a batch runs (:func:`run_batch`): one statement claims every claimable id, each under its
own fencing token and attempt count (batch_store.py); the rest get their usual answer
(duplicate: skipped and logged, paused: left alone, not due: sent again when due). The claimed
ones run one after another, each with the single path's transaction, outcome, retry and DLQ,
and one finish statement each that also extends the leases of those still waiting.

Time limits: Celery's apply to the whole message, so per action they are enforced here
(:class:`ActionClock`): the soft limit raises in the handler (SIGALRM), the hard limit kills
the process (a watchdog thread sends SIGKILL), as Celery's pool would for a single task. The
running action's lease was set at its start (by the claim, or by the previous finish) to
start + hard limit + margin, so an expired lease still means a dead run.

Crash: a killed worker's batch message is redelivered (``acks_late``,
``reject_on_worker_lost``); its finished actions are no longer claimable and the unfinished
are RUNNING under the dead tokens, so the redelivery runs nothing. One lease later the sweeper
moves the unfinished to RETRY (the never-started ones with their attempt given back) and they
run once more.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from aicmo.db import db_now, new_session
from aicmo.orchestration.batch_store import TOKEN_SEPARATOR, Following, token_of
from aicmo.orchestration.executor import (
    CLAIM_SKEW,
    DatabaseUnavailable,
    Executor,
    Outcome,
    OutcomeKind,
    describe_error,
    running_action,
)
from aicmo.orchestration.registry import ActionType, registry
from aicmo.orchestration.store import StoreUnavailable

log = logging.getLogger(__name__)


class ActionClock:
    """Per-action soft and hard time limits for the actions of one batch message.

    Only in the main thread (where signals arrive; a prefork child runs its tasks there); in
    other threads it does nothing, as Celery's own limits do nothing under ``-P threads``.
    """

    def __init__(self, soft_error: type[BaseException]) -> None:
        self._soft_error = soft_error
        self._deadline: float | None = None
        self._cond = threading.Condition()
        self._pid: int | None = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left <= 0:
                    log.error("hard time limit of a batched action exceeded: killing the process")
                    os.kill(os.getpid(), signal.SIGKILL)
                self._cond.wait(left)

    @contextmanager
    def limit(self, spec: ActionType) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if self._pid != os.getpid():  # first use in this (forked) process
            self._pid = os.getpid()
            threading.Thread(target=self._watch, name="aicmo-batch-clock", daemon=True).start()
        soft = spec.soft_time_limit

        def on_alarm(signum: int, frame: Any) -> None:
            raise self._soft_error(f"soft time limit of {soft:g}s exceeded")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, soft)
        with self._cond:
            self._deadline = time.monotonic() + spec.time_limit
            self._cond.notify()
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            with self._cond:
                self._deadline = None


def run_batch(
    executor: Executor,
    action_ids: Sequence[int],
    action_type: str,
    clock: ActionClock | None = None,
) -> list[Outcome]:
    """Claim ``action_ids`` in one statement and run the claimed ones in id order."""
    spec = registry.get(action_type)
    ids = sorted({int(i) for i in action_ids})
    if spec.concurrency is not None:
        # Never batched by the dispatcher; a hand-made batch message still keeps the keys.
        return [executor.run(i, action_type) for i in ids]
    key = tuple(ids)
    unanswered = executor.take_unanswered(key)
    prefix = unanswered or executor.new_token() + TOKEN_SEPARATOR
    try:
        claimed = executor.store.claim_many(
            ids,
            spec.name,
            prefix,
            lease_seconds=spec.lease_seconds(),
            skew_seconds=CLAIM_SKEW.total_seconds(),
            reclaim=unanswered is not None,
        )
    except (StoreUnavailable, OperationalError, InterfaceError) as exc:
        # The claim may have committed unanswered: the message's retry asks with these tokens.
        executor.remember_unanswered(key, prefix)
        raise DatabaseUnavailable(describe_error(exc)) from exc
    outcomes: list[Outcome] = []
    got = {c.id for c in claimed}
    missing = [i for i in ids if i not in got]
    if missing:
        with new_session(executor.store.engine) as session, session.begin():
            now = db_now(session)
            outcomes.extend(executor._why_not_claimed(session, i, spec, now) for i in missing)
    lease = spec.lease_seconds()
    # Half the margin above the hard limit (see Following.renew_below).
    renew_below = spec.time_limit + (lease - spec.time_limit) / 2
    for index, one in enumerate(claimed):
        token = token_of(prefix, one.id)
        action = running_action(one, spec.name, token)
        following = Following(prefix, tuple(c.id for c in claimed[index + 1 :]), lease, renew_below)
        with clock.limit(spec) if clock is not None else nullcontext():
            outcome = executor._execute(action, one, spec, token, None, following)
        outcomes.append(outcome)
        if outcome.kind is OutcomeKind.LEASE_LOST:
            # The waiting actions' leases were set by the same statements as this one's, so
            # they ended with it: the sweeper has taken them back and sends them again.
            # Running them here would only repeat their external effects.
            outcomes.extend(
                Outcome(OutcomeKind.LEASE_LOST, c.id, spec.name, c.attempts, error="batch lost")
                for c in claimed[index + 1 :]
            )
            break
    return outcomes


def counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """The batch task's result (what Flower shows): how many actions ended how."""
    tally = Counter(o.kind.value for o in outcomes)
    return {"actions": len(outcomes), **dict(sorted(tally.items()))}
