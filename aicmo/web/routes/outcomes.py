"""The recipient-facing and provider-facing ends of the outcome loop (thin over aicmo.ops.outcomes):

* ``GET /u/TOKEN``: a confirmation page with one button; ``POST /u/TOKEN``: RFC 8058 one-click
  unsubscribe. No login and no CSRF token by design: the signed token is the capability, it
  can only unsubscribe the one address it names, and mailbox providers POST
  ``List-Unsubscribe=One-Click`` with no cookie or token of ours.
* ``GET /c/TOKEN``: a counted click, 302 to the URL the token binds (never any other: no open
  redirect).
* ``POST /webhooks/email/{provider}``: a provider's signed events, one EMAIL_EVENT action each.

A bad or tampered token is a 4xx and changes nothing; no request gets a 500.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from aicmo.cam.outcomes.tokens import BadToken
from aicmo.config import get_settings
from aicmo.ops import outcomes as ops
from aicmo.web.errors import describe
from aicmo.web.metrics import metrics
from aicmo.web.routes.webhooks import _read_bounded
from aicmo.web.views import templates

router = APIRouter(tags=["outcomes"])
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _page(request: Request, status: int, **context: object) -> Response:
    response = templates.TemplateResponse(
        request, "unsubscribe.html", {"done": False, "address": None, **context}, status_code=status
    )
    response.headers.update(NO_STORE)
    return response


def _refused(request: Request, exc: BaseException) -> Response:
    status, message = (
        (404, "this link is not valid") if isinstance(exc, BadToken) else describe(exc)
    )
    if "text/html" in request.headers.get("accept", ""):
        return Response(
            f"<!doctype html><title>{status}</title><p>{message}</p>",
            status_code=status,
            media_type="text/html",
            headers=NO_STORE,
        )
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


@router.get("/u/{token}", include_in_schema=False)
async def unsubscribe_page(token: str, request: Request) -> Response:
    try:
        preview = await run_in_threadpool(ops.unsubscribe_preview, token)
    except Exception as exc:
        return _refused(request, exc)
    return _page(request, 200, token=token, address=preview["address"])


@router.post("/u/{token}", include_in_schema=False)
async def unsubscribe(token: str, request: Request) -> Response:
    started = time.perf_counter()
    try:
        done = await run_in_threadpool(ops.unsubscribe, token)
    except Exception as exc:
        metrics().unsubscribes.labels("refused").inc()
        return _refused(request, exc)
    # From the request to the committed suppression: the providers allow 2 days.
    metrics().unsubscribe_seconds.observe(time.perf_counter() - started)
    metrics().unsubscribes.labels("new" if done["first_time"] else "again").inc()
    if "text/html" in request.headers.get("accept", ""):
        return _page(request, 200, done=True, address=done["address"])
    return JSONResponse({"unsubscribed": True}, headers=NO_STORE)


@router.get("/c/{token}", include_in_schema=False)
async def click(token: str, request: Request) -> Response:
    try:
        url = await run_in_threadpool(ops.click, token)
    except Exception as exc:
        return _refused(request, exc)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.post("/webhooks/email/{provider}", status_code=200)
async def email_events(provider: str, request: Request) -> Response:
    """Verify a provider's signed email events and enqueue one EMAIL_EVENT action each."""
    counter = metrics().email_events
    limit = get_settings().email_events_max_bytes
    declared = request.headers.get("content-length", "")
    body = (
        None
        if declared.isdigit() and int(declared) > limit
        else await _read_bounded(request, limit)
    )
    if body is None:
        counter.labels(provider[:32], "too_large").inc()
        return JSONResponse({"error": f"body over the limit of {limit} bytes"}, status_code=413)
    try:
        receipt = await run_in_threadpool(
            ops.receive_email_events, provider, body, dict(request.headers)
        )
    except Exception as exc:
        status, message = describe(exc)
        counter.labels(provider[:32] if status != 404 else "unknown", str(status)).inc()
        return JSONResponse({"error": message}, status_code=status)
    counter.labels(provider, "accepted").inc()
    return JSONResponse(receipt)
