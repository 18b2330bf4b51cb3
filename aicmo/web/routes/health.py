"""Open endpoints: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from aicmo.config import get_settings
from aicmo.ops import health as health_ops
from aicmo.web.metrics import metrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> JSONResponse:
    """Readiness: the database (and its schema), the broker and beat's heartbeat."""
    report = await run_in_threadpool(health_ops.readiness)
    return JSONResponse(report, status_code=200 if report["healthy"] else 503)


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    """Prometheus exposition (protected by AICMO_WEB_METRICS_TOKEN when it is set)."""
    token = get_settings().web_metrics_token
    if token is not None:
        scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            supplied.strip().encode(), token.get_secret_value().encode()
        ):
            return JSONResponse(
                {"detail": "metrics need Authorization: Bearer <AICMO_WEB_METRICS_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    body = await run_in_threadpool(metrics().exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
