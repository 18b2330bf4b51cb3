"""Health and readiness: ``aicmo health``, ``GET /readyz`` (the checks live in aicmo.health)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aicmo.health import run_checks

HEALTH_CHECKS = ("database", "broker", "beat", "workers", "stranded")
# What a load balancer asks before sending traffic to a web process: workers are not its
# business (the web service answers webhooks and pages without them).
READINESS_CHECKS = ("database", "broker", "beat")


def health(checks: Sequence[str] = (), timeout: float | None = None) -> dict[str, Any]:
    results = run_checks(list(checks) or list(HEALTH_CHECKS), timeout)
    return {"healthy": all(r.ok for r in results), "checks": [r.as_dict() for r in results]}


def readiness(timeout: float | None = None) -> dict[str, Any]:
    return health(READINESS_CHECKS, timeout)
