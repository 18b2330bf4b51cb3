"""The ASGI application: ``create_app()`` (uvicorn's factory, ``aicmo serve``)."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from aicmo.ops.users import Role, User
from aicmo.web.errors import describe
from aicmo.web.routes import (
    api,
    auth,
    console_actions,
    console_cam,
    health,
    outcomes,
    webhooks,
)
from aicmo.web.security import CsrfRefused, Forbidden, NotAuthenticated, require
from aicmo.web.views import HERE, render

log = logging.getLogger(__name__)
Viewer = Annotated[User, Depends(require(Role.VIEWER))]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Everything is served from here: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
}


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(
        ("/api/", "/webhooks/", "/metrics", "/readyz", "/healthz", "/openapi")
    ) or (
        "application/json" in request.headers.get("accept", "")
        and "text/html" not in request.headers.get("accept", "")
    )


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    user = getattr(request.state, "user", None)
    return render(request, "error.html", user, status_code=status, status=status, message=message)


def create_app() -> FastAPI:
    from aicmo.logging import configure_logging

    configure_logging()
    app = FastAPI(
        title="aicmo",
        summary="Lead webhooks, the review and operations console, and the JSON API.",
        version="0.1.0",
        # Swagger UI and ReDoc load their scripts from a CDN: /docs is rendered here instead.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, to logged-in users only
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for router in (
        health.router,
        webhooks.router,
        outcomes.router,
        auth.router,
        api.router,
        console_actions.router,
        console_cam.router,
    ):
        app.include_router(router)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(user: Viewer) -> Response:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request, user: Viewer) -> Response:
        """The OpenAPI document (/openapi.json) as a page: every operation, no script."""
        spec = app.openapi()
        operations = [
            {"method": method.upper(), "path": path, **operation}
            for path, methods in spec.get("paths", {}).items()
            for method, operation in methods.items()
        ]
        return render(request, "docs.html", user, spec=spec, operations=operations)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"error": "log in, or send Authorization: Bearer <API token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, exc.message)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return _error(request, 403, "CSRF token missing or wrong: reload the page and try again")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return _error(request, 422, "; ".join(problems)[:2000] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def anything(request: Request, exc: Exception) -> Response:
        status, message = describe(exc)
        return _error(request, status, message)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        try:
            response: Response = await call_next(request)
        except Exception as exc:  # raised past the handlers: still never a 500
            status, message = describe(exc)
            response = _error(request, status, message)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
