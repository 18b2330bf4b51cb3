"""``/api/...``: the operations as JSON for scripts (``Authorization: Bearer aicmo_...``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from aicmo.ops import actions as actions_ops
from aicmo.ops import campaigns as campaigns_ops
from aicmo.ops import control
from aicmo.ops import health as health_ops
from aicmo.ops import review as review_ops
from aicmo.ops import stats as stats_ops
from aicmo.ops.users import Role, User
from aicmo.orchestration.status import ActionStatus
from aicmo.web.security import current_user, require

router = APIRouter(prefix="/api", tags=["api"])

Viewer = Annotated[User, Depends(require(Role.VIEWER))]
Reviewer = Annotated[User, Depends(require(Role.REVIEWER))]
Operator = Annotated[User, Depends(require(Role.OPERATOR))]


class Ids(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=1000)


class Decision(Ids):
    note: Annotated[str, Field(max_length=2000)] | None = None


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Annotated[str, Field(max_length=64)] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None


@router.get("/me")
async def me(user: Annotated[User, Depends(current_user)]) -> dict[str, Any]:
    return {"name": user.name, "role": user.role.value}


@router.get("/actions")
async def list_actions(
    user: Viewer,
    status: Annotated[list[ActionStatus] | None, Query()] = None,
    type: Annotated[list[str] | None, Query(max_length=64)] = None,
    key: Annotated[str | None, Query(max_length=255)] = None,
    campaign: Annotated[int | None, Query(gt=0)] = None,
    before: Annotated[int | None, Query(gt=0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Newest first; the next page is ``?before=<next_before>``."""
    rows = await run_in_threadpool(
        actions_ops.list_actions,
        actions_ops.ActionFilter([s.value for s in status or ()], type or (), key, campaign),
        limit,
        before,
        True,
    )
    return {"actions": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/actions/{action_id}")
async def show_action(action_id: int, user: Viewer) -> dict[str, Any]:
    return await run_in_threadpool(actions_ops.show_action, action_id, True)


@router.post("/actions/{action_id}/replay")
async def replay_action(action_id: int, user: Operator) -> dict[str, Any]:
    return {"replayed": await run_in_threadpool(actions_ops.replay, [action_id], user.actor)}


@router.post("/actions/{action_id}/cancel")
async def cancel_action(action_id: int, user: Operator) -> dict[str, Any]:
    return {"cancelled": await run_in_threadpool(actions_ops.cancel, [action_id], user.actor)}


@router.post("/dlq/replay")
async def replay_dlq(scope: Scope, user: Operator) -> dict[str, Any]:
    """Replay the dead-letter queue, or only one type of it."""
    ids = await run_in_threadpool(actions_ops.replay_dead_letters, scope.type, user.actor)
    return {"replayed": ids}


@router.get("/messages")
async def list_messages(
    user: Viewer,
    campaign: Annotated[int | None, Query(gt=0)] = None,
    status: Literal["DRAFT", "APPROVED", "REJECTED", "QUEUED", "PUBLISHED", "FAILED"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    rows = await run_in_threadpool(review_ops.list_messages, campaign, status, limit, offset)
    return {"messages": rows}


@router.post("/messages/approve")
async def approve(decision: Decision, user: Reviewer) -> dict[str, Any]:
    """Approve DRAFT messages; each one's CAMPAIGN_PUBLISH is queued when its campaign can send."""
    rows = await run_in_threadpool(review_ops.approve, decision.ids, user.actor, decision.note)
    return {"decisions": rows}


@router.post("/messages/reject")
async def reject(decision: Decision, user: Reviewer) -> dict[str, Any]:
    rows = await run_in_threadpool(review_ops.reject, decision.ids, user.actor, decision.note)
    return {"decisions": rows}


@router.get("/campaigns")
async def list_campaigns(user: Viewer) -> dict[str, Any]:
    return {"campaigns": await run_in_threadpool(campaigns_ops.list_campaigns)}


@router.get("/campaigns/{campaign_id}")
async def show_campaign(campaign_id: int, user: Viewer) -> dict[str, Any]:
    return await run_in_threadpool(campaigns_ops.detail, campaign_id)


@router.post("/campaigns/{campaign_id}/{verb}")
async def change_campaign(
    campaign_id: int, verb: Literal["activate", "pause", "resume", "kill", "unkill"], user: Operator
) -> dict[str, Any]:
    if verb in ("kill", "unkill"):
        return await run_in_threadpool(
            campaigns_ops.set_kill_switch, campaign_id, verb == "kill", user.actor
        )
    return await run_in_threadpool(campaigns_ops.transition, campaign_id, verb, user.actor)


@router.post("/pause")
async def pause(scope: Scope, user: Operator) -> dict[str, Any]:
    return await run_in_threadpool(control.pause, scope.type, scope.reason, user.actor)


@router.post("/resume")
async def resume(scope: Scope, user: Operator) -> dict[str, Any]:
    return await run_in_threadpool(control.resume, scope.type, user.actor)


@router.get("/stats")
async def stats(user: Viewer) -> dict[str, Any]:
    found = await run_in_threadpool(stats_ops.stats)
    return found.as_dict()


@router.get("/overview")
async def overview(user: Viewer) -> dict[str, Any]:
    return await run_in_threadpool(stats_ops.overview)


@router.get("/health")
async def health(user: Viewer) -> JSONResponse:
    report = await run_in_threadpool(health_ops.health)
    return JSONResponse(report, status_code=200 if report["healthy"] else 503)


@router.get("/doctor")
async def doctor(user: Operator) -> JSONResponse:
    """`aicmo doctor`'s census (read only; repairs stay with `aicmo doctor --repair`)."""
    from aicmo.ops import doctor as doctor_ops

    found = await run_in_threadpool(doctor_ops.report)
    return JSONResponse(found.as_dict())
