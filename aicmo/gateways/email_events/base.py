"""What every email-event verifier shares: the normalised event, the refusals, helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aicmo.json_nesting import nesting_depth

KINDS = (
    "delivered",
    "bounce_hard",
    "bounce_soft",
    "complaint",
    "unsubscribe",
    "open",
    "click",
    "other",
)
MAX_EVENTS = 1000
MAX_JSON_DEPTH = 64


class EventRejected(ValueError):
    status_code = 400


class BadEventSignature(EventRejected):
    status_code = 401


class BadEventPayload(EventRejected):
    status_code = 422


class ProviderUnconfigured(EventRejected):
    """No secret/key configured for this provider: every request to it is refused."""

    status_code = 404


@dataclass(frozen=True)
class ProviderEvent:
    provider: str
    event_id: str
    kind: str
    occurred_at: datetime
    message_ref: str | None = None  # the Message-ID header we set, when the provider echoes it
    provider_message_id: str | None = None
    recipient: str | None = None
    url: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
            return value
    return None


def parse_json(body: bytes) -> Any:
    if nesting_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadEventPayload(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadEventPayload("body is not valid JSON") from None


def text(value: Any, limit: int = 500) -> str | None:
    if isinstance(value, str) and value:
        return value[:limit]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def from_unix(value: Any) -> datetime:
    try:
        seconds = float(value)
        if not 0 <= seconds < 1e11:
            raise ValueError
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError):
        raise BadEventPayload("a timestamp is not unix seconds") from None


def from_iso(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise BadEventPayload("a timestamp is not an ISO 8601 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadEventPayload("a timestamp is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def unix_header(value: str | None, now: float, tolerance: float, name: str) -> int:
    if not value or not value.isdigit() or len(value) > 15:
        raise BadEventSignature(f"missing or malformed {name}")
    stamp = int(value)
    if abs(now - stamp) > tolerance:
        raise BadEventSignature(
            f"{name} is {abs(now - stamp):.0f}s away from now (tolerance {tolerance:g}s): "
            "refused as a possible replay"
        )
    return stamp


def require_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadEventPayload(f"{what} is not a JSON object")
    return value


def sub(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` if it is an object, else an empty one."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}
