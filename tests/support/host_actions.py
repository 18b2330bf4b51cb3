"""The action type the host scenarios run (tests/hosts): an external effect, then a database
effect, with a lease of seconds.

The external effect is an HTTP POST to the run's effect receiver (in the root namespace, on the
host's gateway address) carrying the action's idempotency key, sent outside any transaction,
like a real provider call. The database effect is a row in ``test_effects`` written in the
handler's transaction (it commits with SUCCESS or not at all). ``worker`` in that row names the
host, so the books can say which host did what.

Only the workers a host test starts read the "hosts" queue; they load this module through
``AICMO_ACTION_MODULES`` (see :data:`ACTION_MODULES`).
"""

from __future__ import annotations

import os
import time
import urllib.request
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.errors import TransientError
from aicmo.orchestration.registry import registry
from aicmo.orchestration.retry import RetryPolicy

HOSTS_QUEUE = "hosts"
HOST_EFFECT = "T_HOST_EFFECT"
ACTION_MODULES = "aicmo.orchestration.adapters,tests.support.actions,tests.support.host_actions"
# Set per host by the harness: where the effect receiver listens, and the host's name.
EFFECT_URL_ENV = "AICMO_TEST_EFFECT_URL"
HOST_NAME_ENV = "AICMO_TEST_HOST"
# A partition costs an attempt (lease expired), a lossy link may cost one more.
HOST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.2, factor=2.0, max_delay=2.0, jitter=0.0)


class HostEffectPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str
    sleep: float = 0.0


def _post_external(ctx: ActionContext, tag: str) -> None:
    url = os.environ.get(EFFECT_URL_ENV)
    if not url:
        return
    request = urllib.request.Request(
        f"{url}/effect",
        data=tag.encode(),
        method="POST",
        headers={
            "Idempotency-Key": ctx.idempotency_key,
            "X-Host": os.environ.get(HOST_NAME_ENV, ""),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=1.5) as answer:
            answer.read()
    except OSError as exc:
        raise TransientError(f"{tag}: effect receiver unreachable ({exc})") from exc


# Hard limit 3 s, so the lease (hard limit + AICMO_LEASE_MARGIN_SECONDS, 1 s in tests) is 4 s:
# a partition of a few seconds outlives it.
@registry.action(
    HOST_EFFECT,
    payload=HostEffectPayload,
    retry=HOST_RETRY,
    soft_time_limit=2,
    time_limit=3,
    queue=HOSTS_QUEUE,
)
def host_effect(ctx: ActionContext, payload: HostEffectPayload) -> dict[str, Any]:
    """Sleep, call the external receiver, then record one database effect row."""
    if payload.sleep:
        time.sleep(payload.sleep)
    _post_external(ctx, payload.tag)
    host = os.environ.get(HOST_NAME_ENV, "root")
    ctx.session.execute(
        text(
            "INSERT INTO test_effects (tag, action_id, attempt, worker) "
            "VALUES (:tag, :action_id, :attempt, :worker)"
        ),
        {
            "tag": payload.tag,
            "action_id": ctx.action_id,
            "attempt": ctx.attempt,
            "worker": f"{host} {ctx.worker}",
        },
    )
    return {"host": host}
