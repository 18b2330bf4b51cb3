"""Where `aicmo doctor` (aicmo/ops/doctor.py, another engineer's) plugs into the web.

Until it is wired, the doctor's page and ``GET /api/doctor`` answer 501 and say so.
Wiring it: make ``report()`` call the doctor's entry point and return JSON-able data.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def report() -> dict[str, Any] | None:
    return None  # the lead wires aicmo.ops.doctor here


def json_report() -> JSONResponse:
    found = report()
    if found is None:
        return JSONResponse({"error": "aicmo doctor is not wired into the web yet"}, 501)
    return JSONResponse(found)
