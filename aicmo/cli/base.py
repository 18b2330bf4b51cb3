"""The ``aicmo`` group and what every command module shares: output helpers, input parsing,
and the error handling that turns an operator's mistake into one line.

Every command reads its settings from the environment (``AICMO_*``, see aicmo/config.py),
prints rich tables for people and ``--json`` for scripts, and exits non-zero with one clear
line on bad input. Exit codes: 0 ok, 1 refused or failed (unknown action, invalid payload,
unhealthy), 2 usage error (bad option or argument).
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.text import Text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from aicmo.ops.actions import STATUS_NAMES
from aicmo.orchestration.errors import AOLError

__all__ = ["STATUS_NAMES", "main"]

F = TypeVar("F", bound=Callable[..., Any])

STATUS_STYLE = {
    "PENDING": "dim",
    "READY": "cyan",
    "RUNNING": "blue",
    "RETRY": "yellow",
    "SUCCESS": "green",
    "FAILED": "red",
    "DLQ": "bold red",
    "CANCELLED": "dim",
}


# -- output helpers ------------------------------------------------------------------------


def console() -> Console:
    # Built per call: CliRunner swaps sys.stdout, and rich reads it when printing.
    return Console(highlight=False)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def styled_status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.1f}s"
    elif seconds < 3600:
        text = f"{seconds / 60:.1f}m"
    elif seconds < 86400:
        text = f"{seconds / 3600:.1f}h"
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


def shorten(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def operator_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


# -- errors: one clear line, never a traceback, for what an operator can get wrong ---------


def _database_problem(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    lowered = text.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database has no aicmo schema yet ({first}); run `aicmo db upgrade`"
    from aicmo.config import get_settings
    from aicmo.orchestration.redaction import redact

    url = redact(get_settings().database_url)
    return f"database error ({url}): {first}"


class AicmoGroup(click.Group):
    """Turns the errors an operator can cause into a message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AOLError as exc:
            raise click.ClickException(str(exc)) from None
        except (OperationalError, ProgrammingError) as exc:
            raise click.ClickException(_database_problem(exc)) from None
        except Exception as exc:
            if _is_campaign_error(exc):
                raise click.ClickException(str(exc)) from None
            raise


def _is_campaign_error(exc: BaseException) -> bool:
    module = sys.modules.get("aicmo.cam.errors")
    error_type = getattr(module, "CampaignError", None) if module else None
    return error_type is not None and isinstance(exc, error_type)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def parse_when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2030-01-31T09:00:00+00:00)",
            param_hint="--at",
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise click.BadParameter(
            f"{value!r} has no timezone; add one, e.g. {value}Z or {value}+02:00",
            param_hint="--at",
        )
    return when


def read_payload(value: str, option: str = "--payload") -> Any:
    """JSON text, ``@file.json``, or ``-`` for standard input."""
    if value == "-":
        text = sys.stdin.read()
        source = "standard input"
    elif value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint=option
            ) from None
        source = str(path)
    else:
        text, source = value, option
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({source}): {exc}", param_hint=option) from None


# -- the command ---------------------------------------------------------------------------


@click.group(cls=AicmoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aicmo", prog_name="aicmo")
@click.option(
    "--verbose", "-v", is_flag=True, help="Show aicmo's own log lines (at AICMO_LOG_LEVEL)."
)
def main(verbose: bool) -> None:
    """Operate aicmo's action orchestration layer (AOL).

    Settings come from the environment (AICMO_DATABASE_URL, AICMO_BROKER_URL, ...); with
    none set, the embedded default is used: a SQLite file and a file-based broker under
    ./var. Start with `aicmo demo`. Data goes to standard output (--json for scripts),
    errors and log lines to standard error.
    """
    import logging

    from aicmo.logging import configure_logging

    configure_logging(stream=_CurrentStderr())
    if not verbose:
        logging.getLogger("aicmo").setLevel(logging.WARNING)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a record is logged (click's CliRunner swaps
    it per invocation), so a handler never holds a stream that was closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
