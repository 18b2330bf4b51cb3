"""``/login`` and ``/logout``: a session for a person (CSRF-protected, rate-limited)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from aicmo.config import get_settings
from aicmo.ops.users import LoginRefused, authenticate
from aicmo.web.security import (
    CsrfRefused,
    SlidingWindow,
    check_csrf,
    end_session,
    read_session,
    start_session,
    write_session_cookie,
)
from aicmo.web.views import render

router = APIRouter(include_in_schema=False)
_limiter: SlidingWindow | None = None


def limiter() -> SlidingWindow:
    global _limiter
    if _limiter is None:
        _limiter = SlidingWindow(get_settings().web_login_attempts_per_minute)
    return _limiter


def safe_next(value: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    session = read_session(request)
    await check_csrf(request, session)  # login CSRF: the form came from this site
    form = await request.form()
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    client = request.client.host if request.client else "unknown"
    if not limiter().allow(client):
        return render(
            request,
            "login.html",
            None,
            status_code=429,
            next=target,
            error="too many login attempts from your address; wait a minute",
        )
    try:
        user = await run_in_threadpool(authenticate, name, password)
    except LoginRefused as exc:
        return render(request, "login.html", None, status_code=401, next=target, error=str(exc))
    start_session(request, user)
    response = RedirectResponse(target, status_code=303)
    write_session_cookie(request, response)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        await check_csrf(request, read_session(request))
    except CsrfRefused:
        return RedirectResponse("/?msg=" + quote("logout refused: stale form"), status_code=303)
    end_session(request)
    response = RedirectResponse("/login", status_code=303)
    write_session_cookie(request, response)
    return response
