"""Logging set-up: plain text, or one JSON object per line (AICMO_LOG_FORMAT=json).

Records carry their structured fields in ``extra`` (action_id, action_type, event, attempt,
duration_ms, ...); the JSON formatter writes them as keys.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aicmo.config import Settings, get_settings
from aicmo.orchestration.redaction import redact

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(document, default=str, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(settings: Settings | None = None, stream: Any = None) -> None:
    """Log aicmo's records to ``stream`` (default: standard error, as it is now)."""
    s = settings or get_settings()
    logger = logging.getLogger("aicmo")
    logger.setLevel(s.log_level.upper())
    for handler in list(logger.handlers):
        if getattr(handler, "_aicmo", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._aicmo = True  # type: ignore[attr-defined]
    if s.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
