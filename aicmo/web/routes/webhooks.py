"""``POST /webhooks/leads/{source}``: the signed lead webhook over aicmo.cam.webhooks.receive.

The body is read in chunks and refused with 413 past the limit, before it is all in
memory. Every answer is JSON; the same event delivered twice returns the same action.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from aicmo.cam import webhooks
from aicmo.config import get_settings
from aicmo.web.errors import describe
from aicmo.web.metrics import metrics

router = APIRouter(tags=["webhooks"])

OUTCOME_BY_STATUS = {
    401: "bad_signature",
    404: "unknown_source",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    400: "invalid",
}


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/webhooks/leads/{source}",
    status_code=202,
    responses={
        200: {"description": "already received (the same action)"},
        401: {"description": "missing, malformed, stale or wrong signature"},
        404: {"description": "unknown source"},
        409: {"description": "event id reused with another body"},
        413: {"description": "body too large"},
        422: {"description": "invalid event"},
        503: {"description": "database unavailable"},
    },
)
async def lead_webhook(source: str, request: Request) -> JSONResponse:
    """Verify the X-Aicmo-Signature and enqueue CAMPAIGN_CAPTURE_LEADS for the event."""
    counter = metrics().webhooks
    limit = get_settings().cam_webhook_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        counter.labels("too_large").inc()
        return JSONResponse({"error": f"body over the limit of {limit} bytes"}, status_code=413)
    body = await _read_bounded(request, limit)
    if body is None:
        counter.labels("too_large").inc()
        return JSONResponse({"error": f"body over the limit of {limit} bytes"}, status_code=413)
    headers = dict(request.headers)
    try:
        receipt = await run_in_threadpool(webhooks.receive, source, body, headers)
    except Exception as exc:
        status, message = describe(exc)
        counter.labels(OUTCOME_BY_STATUS.get(status, "unavailable")).inc()
        return JSONResponse({"error": message}, status_code=status)
    counter.labels("accepted" if receipt.created else "duplicate").inc()
    return JSONResponse(
        {
            "action_id": receipt.action_id,
            "idempotency_key": receipt.idempotency_key,
            "created": receipt.created,
        },
        status_code=202 if receipt.created else 200,
    )
