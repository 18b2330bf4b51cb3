"""What an exception means to an HTTP client: a status and one line, never a 500.

Errors the caller caused map to 4xx with their message; a database or broker that cannot be
reached is 503; anything unexpected is logged with its traceback and answered 503 with a
generic reason (the traceback may hold data the caller must not see).
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from aicmo.cam.errors import CampaignError, CampaignNotFound, MessageNotFound, ReviewError
from aicmo.orchestration.errors import (
    ActionNotFound,
    AOLError,
    IdempotencyConflict,
    InvalidTransition,
    UnknownActionType,
)
from aicmo.orchestration.redaction import redact

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> tuple[int, str]:
    from aicmo.ops.users import LoginRefused, UserError

    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status, redact(str(exc))  # the webhook errors carry their own status
    if isinstance(exc, ActionNotFound | CampaignNotFound | MessageNotFound):
        return 404, redact(str(exc))
    if isinstance(exc, InvalidTransition | IdempotencyConflict | ReviewError):
        return 409, redact(str(exc))
    if isinstance(exc, LoginRefused):
        return 401, str(exc)
    if isinstance(exc, UnknownActionType | UserError | AOLError | CampaignError):
        return 422, redact(str(exc))
    if isinstance(exc, DataError | IntegrityError):
        # The database refused a value the checks above let through: still the input.
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["error"])[0]
        return 422, redact(f"the database refused the input: {first}")
    if isinstance(exc, RecursionError):
        return 422, "the input is nested too deeply"
    if isinstance(exc, OperationalError | InterfaceError | DBAPIError):
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["error"])[0]
        log.warning("database unavailable: %s", redact(first))
        return 503, "the database is unavailable; try again shortly"
    if isinstance(exc, ValueError):
        return 422, redact(str(exc))
    log.exception("unexpected error answering a request", exc_info=exc)
    return 503, "the service could not answer this request; the error is logged"
