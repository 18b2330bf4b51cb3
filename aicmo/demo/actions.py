"""DEMO_CRM_EXPORT: the demo's action that fails honestly until an operator fixes its cause.

It delivers a JSON report into a CRM "inbox" folder. While that folder does not exist (the
demo starts without it, like an unmounted share), every attempt fails with a transient error,
the retries run out and the action lands in the dead-letter queue. Once the folder exists,
``aicmo actions replay`` runs it again and it succeeds. Nothing writes a status by hand.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from aicmo.orchestration.context import ActionContext
from aicmo.orchestration.errors import TransientError
from aicmo.orchestration.registry import registry
from aicmo.orchestration.retry import RetryPolicy

DEMO_EXPORT = "DEMO_CRM_EXPORT"
# Fast, so the demo reaches the DLQ in about a second: 3 attempts, 0.3 s then 0.6 s apart.
DEMO_RETRY = RetryPolicy(max_attempts=3, base_delay=0.3, factor=2.0, max_delay=2.0, jitter=0.0)


class CrmExportPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inbox: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    report: dict[str, Any]


@registry.action(
    DEMO_EXPORT, payload=CrmExportPayload, retry=DEMO_RETRY, soft_time_limit=10, time_limit=15
)
def crm_export(ctx: ActionContext, payload: CrmExportPayload) -> dict[str, Any]:
    """Deliver a JSON report to the CRM inbox folder (demo only)."""
    from pathlib import Path

    inbox = Path(payload.inbox)
    if not inbox.is_dir():
        raise TransientError(f"CRM inbox {inbox} is not reachable (folder missing)")
    body = json.dumps(payload.report, indent=2, sort_keys=True)
    target = inbox / f"report-{ctx.action_id}.json"
    target.write_text(body, encoding="utf-8")
    artifact = ctx.artifacts.write(body, suffix=".json")
    return {"delivered_to": str(target), "sha256": artifact.sha256}
