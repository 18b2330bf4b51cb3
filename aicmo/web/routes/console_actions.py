"""Console pages for operators: the overview, actions (list, one action, artifacts), the DLQ."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from aicmo.config import get_settings
from aicmo.ops import actions as actions_ops
from aicmo.ops import stats as stats_ops
from aicmo.ops.actions import STATUS_NAMES
from aicmo.ops.users import Role, User
from aicmo.web.security import require
from aicmo.web.views import render

router = APIRouter(include_in_schema=False)
Viewer = Annotated[User, Depends(require(Role.VIEWER))]
Operator = Annotated[User, Depends(require(Role.OPERATOR))]
PAGE = 50


def back(path: str, message: str) -> RedirectResponse:
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}msg={quote(message)}", status_code=303)


@router.get("/")
async def overview(request: Request, user: Viewer) -> Response:
    data = await run_in_threadpool(stats_ops.overview)
    statuses = [s.value for s in stats_ops.OVERVIEW_STATUSES]
    return render(request, "overview.html", user, data=data, statuses=statuses)


@router.get("/doctor")
async def doctor_page(request: Request, user: Operator) -> Response:
    """`aicmo doctor`'s census (read only; repairs stay with `aicmo doctor --repair`)."""
    from aicmo.ops import doctor as doctor_ops

    found = (await run_in_threadpool(doctor_ops.report)).as_dict()
    return render(request, "doctor.html", user, report=found)


@router.get("/actions")
async def actions_page(
    request: Request,
    user: Viewer,
    status: Annotated[str, Query(max_length=16)] = "",
    type: Annotated[str, Query(max_length=64)] = "",
    key: Annotated[str, Query(max_length=255)] = "",
    campaign: Annotated[str, Query(max_length=20)] = "",
    before: Annotated[int | None, Query(gt=0)] = None,
) -> Response:
    error = None
    rows: list[dict[str, object]] = []
    filters = actions_ops.ActionFilter(
        statuses=[status] if status else (),
        types=[type] if type else (),
        key=key or None,
        campaign_id=int(campaign) if campaign.isdigit() else None,
    )
    if status and status.upper() not in STATUS_NAMES:
        error = f"unknown status {status!r}"
    else:
        try:
            rows = await run_in_threadpool(actions_ops.list_actions, filters, PAGE, before, True)
        except Exception as exc:  # a misspelt type: say so on the page
            from aicmo.web.errors import describe

            code, error = describe(exc)
            if code >= 500:
                raise
    query = {
        k: v
        for k, v in (("status", status), ("type", type), ("key", key), ("campaign", campaign))
        if v
    }
    older = None
    if len(rows) == PAGE:
        older = "/actions?" + urlencode({**query, "before": rows[-1]["id"]})
    return render(
        request,
        "actions.html",
        user,
        rows=rows,
        query=query,
        older=older,
        error=error,
        statuses=STATUS_NAMES,
        types=[t["name"] for t in actions_ops.types()],
    )


@router.get("/actions/{action_id}")
async def action_page(request: Request, action_id: int, user: Viewer) -> Response:
    action = await run_in_threadpool(actions_ops.show_action, action_id, True)
    return render(request, "action.html", user, action=action)


@router.post("/actions/{action_id}/replay")
async def replay(action_id: int, user: Operator) -> Response:
    await run_in_threadpool(actions_ops.replay, [action_id], user.actor)
    return back(f"/actions/{action_id}", f"action {action_id} replayed by {user.name}")


@router.post("/actions/{action_id}/cancel")
async def cancel(action_id: int, user: Operator) -> Response:
    await run_in_threadpool(actions_ops.cancel, [action_id], user.actor)
    return back(f"/actions/{action_id}", f"action {action_id} cancelled by {user.name}")


@router.get("/actions/{action_id}/artifacts/{log_id}")
async def artifact(action_id: int, log_id: int, user: Viewer) -> Response:
    """A proof artifact, served as plain text (never rendered as HTML) from the artifact dir."""
    action = await run_in_threadpool(actions_ops.show_action, action_id)
    entry = next((e for e in action["logs"] if e["id"] == log_id and e["artifact_ref"]), None)
    root = get_settings().artifact_dir.resolve()
    path = Path(entry["artifact_ref"]).resolve() if entry else None
    if path is None or not path.is_relative_to(root) or not path.is_file():
        return Response("no such artifact", status_code=404, media_type="text/plain")
    return FileResponse(
        path,
        media_type="text/plain; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


@router.get("/dlq")
async def dlq_page(request: Request, user: Viewer) -> Response:
    counts = await run_in_threadpool(actions_ops.dlq_counts)
    rows = await run_in_threadpool(
        actions_ops.list_actions, actions_ops.ActionFilter(statuses=["DLQ"]), PAGE, None, True
    )
    return render(request, "dlq.html", user, counts=counts, rows=rows)


@router.post("/dlq/replay")
async def replay_dlq(user: Operator, type: Annotated[str, Form(max_length=64)] = "") -> Response:
    ids = await run_in_threadpool(actions_ops.replay_dead_letters, type or None, user.actor)
    return back("/dlq", f"replayed {len(ids)} {type or 'dead-lettered'} action(s)")
