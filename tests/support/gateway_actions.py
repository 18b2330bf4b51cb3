"""Action types for the gateway tests: the real adapters' handlers (and one LLM call),
registered again on a queue of their own.

Only the workers a gateway test starts (live mode, pointed at the test's fake servers) read
the "gateways" queue; the shared proof-mode worker never sees these actions. Workers load this
module through ``AICMO_ACTION_MODULES`` (see :func:`live_worker_env`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from aicmo.llm import get_text_generator
from aicmo.orchestration.adapters.email_adapter import SendEmailPayload, send_email
from aicmo.orchestration.adapters.social_adapter import PostSocialPayload, post_social
from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.errors import RealRunUnconfigured
from aicmo.orchestration.registry import ActionType, registry
from aicmo.orchestration.retry import RetryPolicy

GATEWAYS_QUEUE = "gateways"
# No jitter: tests compare not_before with what the policy (or Retry-After) says.
LIVE_RETRY = RetryPolicy(max_attempts=3, base_delay=1.0, factor=2.0, max_delay=5.0, jitter=0.0)
ACTION_MODULES = "aicmo.orchestration.adapters,tests.support.actions,tests.support.gateway_actions"

registry.register(
    ActionType(
        "T_GW_POST",
        PostSocialPayload,
        post_social,
        retry=LIVE_RETRY,
        soft_time_limit=20,
        time_limit=25,
        queue=GATEWAYS_QUEUE,
    )
)
registry.register(
    ActionType(
        "T_GW_EMAIL",
        SendEmailPayload,
        send_email,
        retry=LIVE_RETRY,
        soft_time_limit=20,
        time_limit=25,
        queue=GATEWAYS_QUEUE,
    )
)


class DraftPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    campaign_id: int | None = None
    max_tokens: int = 60


@registry.action(
    "T_GW_LLM",
    payload=DraftPayload,
    retry=LIVE_RETRY,
    soft_time_limit=20,
    time_limit=25,
    queue=GATEWAYS_QUEUE,
)
def llm_draft(ctx: ActionContext, payload: DraftPayload) -> dict[str, Any]:
    """Generate one text with the configured LLM (its errors classify the action)."""
    generator = get_text_generator()
    if generator is None:
        raise RealRunUnconfigured("no LLM configured (AICMO_LLM_BASE_URL)")
    text = generator.generate(
        payload.prompt,
        campaign_id=payload.campaign_id,
        max_tokens=payload.max_tokens,
        idempotency_key=ctx.idempotency_key,
    )
    return {"text": text}


def live_worker_env(**settings: str) -> dict[str, str]:
    """Environment of a live-mode worker that runs these types (AICMO_ prefix added)."""
    env = {
        "AICMO_PROOF_MODE": "false",
        "AICMO_ACTION_MODULES": ACTION_MODULES,
        # Live campaign mail carries signed unsubscribe links (aicmo.cam.outcomes.tokens).
        "AICMO_EMAIL_TOKEN_KEYS": "test-token-key",
    }
    env.update({f"AICMO_{name.upper()}": value for name, value in settings.items()})
    return env


def route_gateways_queue(app: Any) -> None:
    """Make the test process's Celery app send to the "gateways" queue the way the workers
    read it (the default exchange), even if the app was built before this module loaded."""
    from tasks.config import queue

    if GATEWAYS_QUEUE not in app.amqp.queues:
        app.amqp.queues.add(queue(GATEWAYS_QUEUE))
