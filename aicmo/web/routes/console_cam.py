"""Console pages for campaigns: the review queue and the campaigns with their chart."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from aicmo.ops import campaigns as campaigns_ops
from aicmo.ops import review as review_ops
from aicmo.ops.users import Role, User
from aicmo.web.routes.console_actions import back
from aicmo.web.security import require
from aicmo.web.views import OUTCOME_SERIES, metrics_chart, render

router = APIRouter(include_in_schema=False)
Viewer = Annotated[User, Depends(require(Role.VIEWER))]
Reviewer = Annotated[User, Depends(require(Role.REVIEWER))]
Operator = Annotated[User, Depends(require(Role.OPERATOR))]
REVIEW_PAGE = 100


@router.get("/review")
async def review_page(
    request: Request,
    user: Viewer,
    campaign: Annotated[int | None, Query(gt=0)] = None,
    after: Annotated[int | None, Query(gt=0)] = None,
) -> Response:
    drafts = await run_in_threadpool(review_ops.review_queue, campaign, REVIEW_PAGE, after)
    campaigns = {c["id"]: c for c in await run_in_threadpool(campaigns_ops.list_campaigns)}
    grouped: dict[int, list[dict[str, object]]] = {}
    for message in drafts:
        grouped.setdefault(int(message["campaign_id"]), []).append(message)
    return render(
        request,
        "review.html",
        user,
        grouped=grouped,
        campaigns=campaigns,
        campaign=campaign,
        next_after=drafts[-1]["id"] if len(drafts) == REVIEW_PAGE else None,
    )


def _ids(values: list[str]) -> list[int]:
    ids = [int(v) for v in values if v.isdigit()]
    return ids[:1000]


@router.post("/review/decide")
async def decide(
    user: Reviewer,
    decision: Annotated[Literal["approve", "reject"], Form()],
    ids: Annotated[list[str], Form(max_length=20)],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Approve (which queues CAMPAIGN_PUBLISH, as `aicmo messages approve` does) or reject."""
    chosen = _ids(ids)
    if not chosen:
        return back("/review", "select at least one message")
    change = review_ops.approve if decision == "approve" else review_ops.reject
    results = await run_in_threadpool(change, chosen, user.actor, note or None)
    queued = sum(1 for r in results if r["queued"])
    verb = "approved" if decision == "approve" else "rejected"
    extra = f", {queued} publish action(s) queued" if decision == "approve" else ""
    return back("/review", f"{len(results)} message(s) {verb} by {user.name}{extra}")


@router.get("/campaigns")
async def campaigns_page(request: Request, user: Viewer) -> Response:
    rows = await run_in_threadpool(campaigns_ops.list_campaigns)
    return render(request, "campaigns.html", user, rows=rows)


@router.get("/campaigns/{campaign_id}")
async def campaign_page(request: Request, campaign_id: int, user: Viewer) -> Response:
    data = await run_in_threadpool(campaigns_ops.detail, campaign_id)
    return render(
        request,
        "campaign.html",
        user,
        campaign=data,
        chart=metrics_chart(data["metrics"]),
        outcomes_chart=metrics_chart(
            data["metrics"], series=OUTCOME_SERIES, label="daily email outcomes"
        ),
    )


@router.post("/campaigns/{campaign_id}/{verb}")
async def change_campaign(
    campaign_id: int,
    verb: Literal["activate", "pause", "resume", "kill", "unkill"],
    user: Operator,
) -> Response:
    if verb in ("kill", "unkill"):
        await run_in_threadpool(
            campaigns_ops.set_kill_switch, campaign_id, verb == "kill", user.actor
        )
    else:
        await run_in_threadpool(campaigns_ops.transition, campaign_id, verb, user.actor)
    return back(f"/campaigns/{campaign_id}", f"campaign {campaign_id}: {verb} by {user.name}")
