"""The ``aicmo`` command: inspect, enqueue, replay, pause, health and the embedded demo.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from aicmo.orchestration.errors import AOLError
from aicmo.orchestration.status import ActionStatus

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
STATUS_NAMES = [s.value for s in ActionStatus]


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


@contextmanager
def transaction() -> Iterator[Session]:
    from aicmo.db import session_scope

    with session_scope() as session:
        yield session


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def action_dict(action: Any, with_logs: bool = False) -> dict[str, Any]:
    data = {
        "id": action.id,
        "idempotency_key": action.idempotency_key,
        "action_type": action.action_type,
        "status": action.status,
        "attempts": action.attempts,
        "max_attempts": action.max_attempts,
        "not_before_utc": iso(action.not_before_utc),
        "created_at_utc": iso(action.created_at_utc),
        "updated_at_utc": iso(action.updated_at_utc),
        "started_at_utc": iso(action.started_at_utc),
        "finished_at_utc": iso(action.finished_at_utc),
        "queued_at_utc": iso(action.queued_at_utc),
        "claimed_by": action.claimed_by,
        "last_error": action.last_error,
        "payload": action.payload_json,
        "result": action.result_json,
    }
    if with_logs:
        data["logs"] = [
            {
                "id": entry.id,
                "event": entry.event,
                "attempt": entry.attempt,
                "worker": entry.worker,
                "duration_ms": entry.duration_ms,
                "error": entry.error,
                "artifact_ref": entry.artifact_ref,
                "artifact_sha256": entry.artifact_sha256,
                "details": entry.details_json,
                "created_at_utc": iso(entry.created_at_utc),
            }
            for entry in action.logs
        ]
    return data


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


# -- db ------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations to AICMO_DATABASE_URL (creates the schema on a new database)."""
    from aicmo.config import get_settings
    from aicmo.migrate import upgrade
    from aicmo.orchestration.redaction import redact

    url = get_settings().database_url
    try:
        upgrade(url, revision)
    except DBAPIError:
        raise  # the group turns it into one line
    except Exception as exc:  # alembic's CommandError for an unknown revision, etc.
        fail(f"migration failed: {exc}")
    current = _current_revision()
    console().print(f"[green]schema at {current or '(none)'}[/] on {redact(url)}")


def _current_revision() -> str | None:
    from alembic.runtime.migration import MigrationContext

    from aicmo.db import get_engine

    with get_engine().connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@db.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """Show the schema's revision and whether it is the newest (head)."""
    from aicmo.migrate import current_heads

    current, heads = _current_revision(), sorted(current_heads())
    data = {"current": current, "heads": heads, "up_to_date": current in heads}
    if as_json:
        echo_json(data)
        return
    state = "[green]up to date[/]" if data["up_to_date"] else "[yellow]run `aicmo db upgrade`[/]"
    console().print(f"current {current or '(none)'}, head {', '.join(heads)}: {state}")


# -- action types and enqueue --------------------------------------------------------------


@main.command("types")
@json_option
def types_command(as_json: bool) -> None:
    """List the registered action types, their queue, retry policy and time limits."""
    from aicmo.orchestration.registry import registry

    rows: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "task": spec.task_name,
            "queue": spec.queue,
            "max_attempts": spec.retry.max_attempts,
            "soft_time_limit": spec.soft_time_limit,
            "time_limit": spec.time_limit,
            "description": spec.description,
        }
        for spec in registry
    ]
    if as_json:
        echo_json(rows)
        return
    table = Table("type", "queue", "attempts", "time limit", "description", title="action types")
    for row in rows:
        table.add_row(
            row["name"],
            row["queue"],
            str(row["max_attempts"]),
            f"{row['soft_time_limit']:g}s / {row['time_limit']:g}s",
            row["description"],
        )
    console().print(table)


@main.command()
@click.argument("action_type", metavar="TYPE")
@click.option(
    "--payload",
    "-p",
    required=True,
    help="The payload: JSON text, @file.json, or - to read standard input.",
)
@click.option("--key", "-k", help="Idempotency key (default: a new uuid).")
@click.option(
    "--at",
    "at",
    help="Run no earlier than this ISO 8601 time, with a timezone (2030-01-31T09:00:00Z).",
)
@json_option
def enqueue(action_type: str, payload: str, key: str | None, at: str | None, as_json: bool) -> None:
    """Enqueue one action of TYPE (validated; idempotent on --key).

    The same key with the same type and payload returns the existing action and sends
    nothing new; with a different type or payload it is refused.
    """
    from aicmo.orchestration.queue import ActionQueue

    data = read_payload(payload)
    when = parse_when(at)
    enqueued = ActionQueue.enqueue(action_type.strip().upper(), data, key, when)
    result = {
        "id": enqueued.action_id,
        "idempotency_key": enqueued.idempotency_key,
        "action_type": enqueued.action_type,
        "status": enqueued.status,
        "created": enqueued.created,
    }
    if as_json:
        echo_json(result)
        return
    verb = "enqueued" if enqueued.created else "already enqueued (same key and payload)"
    console().print(
        f"{verb}: action [bold]{enqueued.action_id}[/] {enqueued.action_type} ",
        styled_status(enqueued.status),
        f" key={enqueued.idempotency_key}",
        sep="",
    )


# -- actions -------------------------------------------------------------------------------


@main.group()
def actions() -> None:
    """List, show, replay and cancel actions."""


def _upper_choices(_: click.Context, __: click.Parameter, values: Sequence[str]) -> list[str]:
    return [v.upper() for v in values]


@actions.command("ls")
@click.option(
    "--status",
    "-s",
    "statuses",
    multiple=True,
    type=click.Choice(STATUS_NAMES, case_sensitive=False),
    callback=_upper_choices,
    help="Only this status (repeatable).",
)
@click.option("--type", "-t", "types", multiple=True, help="Only this action type (repeatable).")
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 100_000))
@json_option
def actions_ls(statuses: list[str], types: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List actions, newest first."""
    from aicmo.orchestration.models import AOLAction
    from aicmo.orchestration.registry import registry

    wanted_types = [t.strip().upper() for t in types]
    for name in wanted_types:
        registry.get(name)  # a misspelt type is an error, not an empty list
    query = select(AOLAction).order_by(AOLAction.id.desc()).limit(limit)
    if statuses:
        query = query.where(AOLAction.status.in_(statuses))
    if wanted_types:
        query = query.where(AOLAction.action_type.in_(wanted_types))
    with transaction() as session:
        rows = list(session.scalars(query))
        if as_json:
            echo_json([action_dict(a) for a in rows])
            return
        now = datetime.now(UTC)
        table = Table()
        for name in ("id", "type", "status", "tries", "due"):
            table.add_column(name, no_wrap=True)
        table.add_column("key", max_width=28)
        table.add_column("last error", overflow="fold")
        for a in rows:
            table.add_row(
                str(a.id),
                a.action_type,
                styled_status(a.status),
                f"{a.attempts}/{a.max_attempts}",
                ago(a.not_before_utc, now),
                Text(shorten(a.idempotency_key, 28)),
                Text(shorten(a.last_error, 50)),
            )
    out = console()
    out.print(table)
    out.print(f"{len(rows)} action(s)" + (f" (limit {limit})" if len(rows) == limit else ""))


@actions.command("show")
@click.argument("action_id", type=int)
@json_option
def actions_show(action_id: int, as_json: bool) -> None:
    """Show one action with its payload, result and execution log."""
    from aicmo.orchestration.manager import get_action

    with transaction() as session:
        action = get_action(session, action_id)
        data = action_dict(action, with_logs=True)
    if as_json:
        echo_json(data)
        return
    out = console()
    out.print(
        Text.assemble(
            (f"action {data['id']} ", "bold"),
            f"{data['action_type']} ",
            styled_status(data["status"]),
            f"  attempts {data['attempts']}/{data['max_attempts']}",
        )
    )
    for label in (
        "idempotency_key",
        "not_before_utc",
        "created_at_utc",
        "started_at_utc",
        "finished_at_utc",
        "claimed_by",
        "last_error",
    ):
        if data[label] is not None:
            out.print(Text(f"  {label:16} {data[label]}"), soft_wrap=True)
    out.print(
        Text("  payload          " + json.dumps(data["payload"], ensure_ascii=False)),
        soft_wrap=True,
    )
    if data["result"] is not None:
        out.print(
            Text("  result           " + json.dumps(data["result"], ensure_ascii=False)),
            soft_wrap=True,
        )
    table = Table(title="execution log")
    for name in ("time", "event", "try"):
        table.add_column(name, no_wrap=True)
    table.add_column("worker", max_width=24)
    table.add_column("ms", no_wrap=True, justify="right")
    table.add_column("error / artifact", overflow="fold")
    for entry in data["logs"]:
        detail = entry["error"] or entry["artifact_ref"] or ""
        if entry["artifact_sha256"]:
            detail += f" (sha256 {entry['artifact_sha256'][:12]}…)"
        table.add_row(
            entry["created_at_utc"][11:23],
            entry["event"],
            str(entry["attempt"]),
            shorten(entry["worker"], 24),
            "" if entry["duration_ms"] is None else f"{entry['duration_ms']:.1f}",
            Text(shorten(detail, 160)),
        )
    out.print(table)


@actions.command("replay")
@click.argument("action_ids", nargs=-1, type=int, metavar="[ID]...")
@click.option("--dlq", is_flag=True, help="Replay every action in the dead-letter queue.")
@click.option("--type", "-t", "action_type", help="With --dlq: only this action type.")
@click.option(
    "--limit", default=10_000, show_default=True, type=click.IntRange(1), help="With --dlq."
)
@json_option
def actions_replay(
    action_ids: tuple[int, ...], dlq: bool, action_type: str | None, limit: int, as_json: bool
) -> None:
    """Run DLQ or FAILED actions again, with a fresh attempt budget.

    Give action ids, or --dlq (optionally with --type) for the whole dead-letter queue.
    The execution log keeps the earlier attempts.
    """
    from aicmo.orchestration import manager

    if bool(action_ids) == dlq:
        raise click.UsageError("give action ids or --dlq (one of the two)")
    if action_type and not dlq:
        raise click.UsageError("--type goes with --dlq")
    by = operator_name()
    with transaction() as session:
        if dlq:
            replayed = manager.replay_dead_letters(
                session, action_type.strip().upper() if action_type else None, by=by, limit=limit
            )
        else:
            replayed = [manager.replay(session, action_id, by=by).id for action_id in action_ids]
    # Committed: the messages are on their way.
    if as_json:
        echo_json({"replayed": replayed})
        return
    if not replayed:
        console().print("nothing to replay")
    else:
        console().print(
            f"replayed {len(replayed)} action(s): {', '.join(map(str, replayed[:50]))}"
            + (" …" if len(replayed) > 50 else "")
        )


@actions.command("cancel")
@click.argument("action_ids", nargs=-1, type=int, required=True, metavar="ID...")
@json_option
def actions_cancel(action_ids: tuple[int, ...], as_json: bool) -> None:
    """Cancel waiting (PENDING, READY or RETRY) actions; a message already sent is ignored."""
    from aicmo.orchestration import manager

    by = operator_name()
    with transaction() as session:
        cancelled = [manager.cancel(session, action_id, by=by).id for action_id in action_ids]
    if as_json:
        echo_json({"cancelled": cancelled})
        return
    console().print(f"cancelled {len(cancelled)} action(s): {', '.join(map(str, cancelled))}")


# -- stats ---------------------------------------------------------------------------------


@main.command()
@json_option
@click.option(
    "--prometheus", is_flag=True, help="Print the Prometheus text format (for a textfile scrape)."
)
def stats(as_json: bool, prometheus: bool) -> None:
    """Counts by type and status, the oldest READY action's age, DLQ size, pauses, last sweep."""
    from aicmo.orchestration.registry import registry
    from aicmo.orchestration.stats import collect, prometheus_text

    if as_json and prometheus:
        raise click.UsageError("--json and --prometheus are exclusive")
    with transaction() as session:
        found = collect(session, known_types=registry.names())
    if prometheus:
        click.echo(prometheus_text(found), nl=False)
        return
    if as_json:
        echo_json(found.as_dict())
        return
    totals = found.by_status()
    shown = [s for s in STATUS_NAMES if totals[s] or s in ("READY", "RUNNING", "SUCCESS", "DLQ")]
    table = Table("type", *shown, "total", title="actions by type and status")
    for action_type in found.types:
        counts = found.by_type(action_type)
        if not sum(counts.values()):
            continue
        table.add_row(
            action_type,
            *[_count_cell(counts[s], s) for s in shown],
            str(sum(counts.values())),
        )
    table.add_row(
        "all", *[_count_cell(totals[s], s) for s in shown], str(found.total), end_section=True
    )
    out = console()
    out.print(table)
    oldest = found.oldest_ready_age_seconds
    out.print(f"DLQ size: [{'bold red' if found.dlq_size else 'green'}]{found.dlq_size}[/]")
    out.print("oldest READY action: " + ("none waiting" if oldest is None else f"{oldest:.1f}s"))
    out.print("paused: " + (", ".join(found.paused) if found.paused else "no"))
    if found.set_aside:
        listed = ", ".join(f"{t} ({n})" for t, n in found.set_aside.items())
        out.print(
            f"[bold red]set aside[/] (type not registered here; see `aicmo doctor`): {listed}"
        )
    sweep = found.last_sweep
    out.print(
        "last sweep: " + ("never" if sweep is None else f"{ago(sweep.at, found.at)} by {sweep.by}")
    )


def _count_cell(n: int, status: str) -> Text:
    return Text(str(n), style=STATUS_STYLE.get(status, "") if n else "dim")


# -- pause / resume ------------------------------------------------------------------------


@main.command()
@click.option("--type", "-t", "action_type", help="Pause one action type (default: all).")
@click.option("--reason", "-r", help="Why (shown by `aicmo stats` and in the logs).")
@json_option
def pause(action_type: str | None, reason: str | None, as_json: bool) -> None:
    """Stop workers from starting actions (all, or one type) until `aicmo resume`.

    Running actions finish; waiting ones stay waiting, with no attempt spent.
    """
    from aicmo.orchestration import manager

    scope = action_type.strip().upper() if action_type else None
    with transaction() as session:
        manager.pause(session, scope, reason=reason, by=operator_name())
    if as_json:
        echo_json({"paused": scope or "all", "reason": reason})
        return
    console().print(f"[yellow]paused[/] {scope or 'all action types'}")


@main.command()
@click.option("--type", "-t", "action_type", help="Resume one action type (default: all).")
@json_option
def resume(action_type: str | None, as_json: bool) -> None:
    """Lift a pause; the actions it held back are sent at once."""
    from aicmo.db import db_now
    from aicmo.orchestration import manager
    from aicmo.orchestration.sweeper import Sweeper

    scope = action_type.strip().upper() if action_type else None
    with transaction() as session:
        held = manager.resume(session, scope, by=operator_name())
    sent = 0
    if held:
        sweeper = Sweeper()
        paused_all, paused_types = sweeper.paused_scopes()
        if not paused_all:
            sent = sweeper.dispatch_due(db_now(sweeper.engine()), exclude_types=paused_types)
    if as_json:
        echo_json({"resumed": scope or "all", "held": held, "sent": sent})
        return
    console().print(
        f"[green]resumed[/] {scope or 'all action types'}: {held} waiting action(s), "
        f"{sent} sent now"
    )


# -- health --------------------------------------------------------------------------------

HEALTH_CHECKS = ("database", "broker", "beat", "workers", "stranded")


@main.command()
@click.option(
    "--check",
    "-c",
    "checks",
    multiple=True,
    type=click.Choice(HEALTH_CHECKS),
    help="Run only this check (repeatable). Default: all.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for the broker and workers (default AICMO_HEALTH_TIMEOUT_SECONDS).",
)
@json_option
def health(checks: tuple[str, ...], timeout: float | None, as_json: bool) -> None:
    """Check the database (and its schema), the broker, beat's last sweep, the workers, and
    that `aicmo doctor` finds nothing stranded.

    Exits 0 when every check passes and 1 otherwise, so it serves as a container probe,
    e.g. `aicmo health -c database -c broker`.
    """
    from aicmo.health import run_checks

    results = run_checks(list(checks) or list(HEALTH_CHECKS), timeout)
    healthy = all(r.ok for r in results)
    if as_json:
        echo_json({"healthy": healthy, "checks": [r.as_dict() for r in results]})
    else:
        table = Table("check", "state", "detail", title="aicmo health")
        for r in results:
            table.add_row(
                r.name, Text("ok", "green") if r.ok else Text("FAIL", "bold red"), r.detail
            )
        console().print(table)
    if not healthy:
        sys.exit(1)


# -- campaigns, leads and the review gate (all through aicmo.cam) -------------------------


def campaign_dict(campaign: Any) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "mode": campaign.mode,
        "timezone": campaign.timezone,
        "tick_every_minutes": campaign.tick_every_minutes,
        "tick_daily_at": campaign.tick_daily_at,
        "batch_size": campaign.batch_size,
        "daily_send_limit": campaign.daily_send_limit,
        "kill_switch": campaign.kill_switch,
        "channels": list(campaign.channels),
        "requires_approval": campaign.requires_approval,
        "steps": len(campaign.steps),
        "created_at_utc": iso(campaign.created_at_utc),
    }


def print_campaigns(rows: list[dict[str, Any]], title: str = "campaigns") -> None:
    table = Table(title=title)
    for name in ("id", "name", "status", "mode", "cadence", "channels", "steps", "approval"):
        table.add_column(name, no_wrap=name in ("id", "status", "mode"))
    for c in rows:
        cadence = (
            f"every {c['tick_every_minutes']} min"
            if c["tick_every_minutes"]
            else f"daily {c['tick_daily_at']} {c['timezone']}"
        )
        status = c["status"] + (" (killed)" if c["kill_switch"] else "")
        table.add_row(
            str(c["id"]),
            Text(c["name"]),
            status,
            c["mode"],
            cadence,
            ", ".join(c["channels"]),
            str(c["steps"]),
            "required" if c["requires_approval"] else "no",
        )
    console().print(table)


@main.group()
def campaigns() -> None:
    """Create, list, activate, pause and tick campaigns."""


@campaigns.command("create")
@click.option(
    "--spec",
    "-s",
    required=True,
    help="The campaign as JSON (name, steps, channels, cadence...): text, @file.json or -.",
)
@click.option("--activate", is_flag=True, help="Activate it at once (default: it stays DRAFT).")
@json_option
def campaigns_create(spec: str, activate: bool, as_json: bool) -> None:
    """Create a campaign from a JSON spec; it starts as DRAFT unless --activate.

    Example spec: {"name": "Launch", "steps": [{"subject": "Hi {first_name}",
    "body": "Hello {first_name}"}]}. The fields are those of aicmo.cam.campaigns.CampaignSpec.
    """
    from aicmo.cam import campaigns as cam

    data = read_payload(spec, "--spec")
    if not isinstance(data, dict):
        raise click.BadParameter("the spec must be a JSON object", param_hint="--spec")
    with transaction() as session:
        campaign = cam.create_campaign(session, data)
        if activate:
            campaign = cam.activate(session, campaign.id)
        row = campaign_dict(campaign)
    if as_json:
        echo_json(row)
        return
    console().print(f"campaign {row['id']} created ({row['status']})")


@campaigns.command("ls")
@click.option(
    "--status",
    type=click.Choice(["DRAFT", "ACTIVE", "PAUSED", "STOPPED"], case_sensitive=False),
    help="Only campaigns in this status.",
)
@json_option
def campaigns_ls(status: str | None, as_json: bool) -> None:
    """List campaigns."""
    from aicmo.cam import campaigns as cam

    with transaction() as session:
        rows = [
            campaign_dict(c)
            for c in cam.list_campaigns(session, status.upper() if status else None)
        ]
    if as_json:
        echo_json(rows)
        return
    print_campaigns(rows)


def _campaign_transition(campaign_id: int, verb: str, as_json: bool) -> None:
    from aicmo.cam import campaigns as cam

    change = {"activate": cam.activate, "pause": cam.pause}[verb]
    with transaction() as session:
        row = campaign_dict(change(session, campaign_id))
    if as_json:
        echo_json(row)
        return
    console().print(f"campaign {campaign_id} is {row['status']}")


@campaigns.command("activate")
@click.argument("campaign_id", type=int)
@json_option
def campaigns_activate(campaign_id: int, as_json: bool) -> None:
    """Start (or restart) a campaign: beat's ticks pick it up at its next slot."""
    _campaign_transition(campaign_id, "activate", as_json)


@campaigns.command("pause")
@click.argument("campaign_id", type=int)
@json_option
def campaigns_pause(campaign_id: int, as_json: bool) -> None:
    """Pause a campaign: no tick drafts and no publish sends until it is activated again."""
    _campaign_transition(campaign_id, "pause", as_json)


@campaigns.command("tick")
@click.argument("campaign_id", type=int)
@json_option
def campaigns_tick(campaign_id: int, as_json: bool) -> None:
    """Enqueue a CAMPAIGN_TICK for the campaign now, outside its cadence."""
    from aicmo.cam import campaigns as cam
    from aicmo.cam.schedule import enqueue_ticks
    from aicmo.db import utcnow

    with transaction() as session:
        cam.get_campaign(session, campaign_id)
        enqueued = enqueue_ticks(session, [campaign_id], utcnow())[0]
    result = {
        "campaign_id": campaign_id,
        "action_id": enqueued.action_id,
        "key": enqueued.idempotency_key,
    }
    if as_json:
        echo_json(result)
        return
    console().print(f"tick enqueued: action {enqueued.action_id} ({enqueued.idempotency_key})")


@main.group()
def leads() -> None:
    """Bring leads into a campaign."""


@leads.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--campaign", "-c", "campaign_id", type=int, required=True, help="Campaign id.")
@click.option("--source", default="csv", show_default=True, help="Source name kept on each lead.")
@json_option
def leads_import(file: Path, campaign_id: int, source: str, as_json: bool) -> None:
    """Import leads from a CSV file with a header row (email, phone, linkedin_url,
    first_name, last_name, company, title, consent; other columns are kept as attributes).

    Each row is validated on its own: valid ones are created or merged into the lead with
    the same email, phone or LinkedIn URL; invalid ones are reported, and the command then
    exits 1 (the valid rows are kept).
    """
    from aicmo.cam import leads as cam_leads
    from aicmo.gateways.leads import CsvLeadSource

    rows = CsvLeadSource(file).rows()
    with transaction() as session:
        report = cam_leads.capture(session, campaign_id, source, rows).as_dict()
    report = {"campaign_id": campaign_id, "rows": len(rows), **report}
    if as_json:
        echo_json(report)
        sys.exit(1 if report["invalid"] else 0)
    out = console()
    out.print(
        f"{report['rows']} row(s): {report['created']} new lead(s), {report['merged']} merged, "
        f"{len(report['invalid'])} invalid"
    )
    for problem in report["invalid"][:20]:
        # index 0 is the first data row, on line 2 of the file
        out.print(Text(f"  line {problem['index'] + 2}: {problem['reason']}"), style="yellow")
    if report["invalid"]:
        sys.exit(1)


def message_dict(view: Any) -> dict[str, Any]:
    return {
        "id": view.id,
        "campaign_id": view.campaign_id,
        "lead_id": view.lead_id,
        "lead": view.lead,
        "step": view.step,
        "channel": view.channel,
        "subject": view.subject,
        "body": view.body,
        "publish_status": view.publish_status,
        "generated_by": view.generated_by,
        "reviewer": view.reviewer,
        "created_at_utc": iso(view.created_at_utc),
        "published_at_utc": iso(view.published_at_utc),
        "error": view.error,
    }


@main.group()
def messages() -> None:
    """Review outreach messages: list, approve (which publishes), reject."""


@messages.command("ls")
@click.option("--campaign", "-c", "campaign_id", type=int, help="Only this campaign.")
@click.option(
    "--status",
    "-s",
    type=click.Choice(
        ["DRAFT", "APPROVED", "REJECTED", "QUEUED", "PUBLISHED", "FAILED"], case_sensitive=False
    ),
    help="Only this publish status (DRAFT: waiting for review).",
)
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def messages_ls(campaign_id: int | None, status: str | None, limit: int, as_json: bool) -> None:
    """List outreach messages, oldest first."""
    from aicmo.cam import review

    with transaction() as session:
        rows = [
            message_dict(v)
            for v in review.list_messages(
                session, campaign_id, status.upper() if status else None, limit=limit
            )
        ]
    if as_json:
        echo_json(rows)
        return
    table = Table(title="outreach messages")
    for name in ("id", "campaign", "lead", "step", "channel", "status"):
        table.add_column(name, no_wrap=name != "lead")
    table.add_column("subject / body", overflow="fold")
    for m in rows:
        table.add_row(
            str(m["id"]),
            str(m["campaign_id"]),
            Text(m["lead"] or ""),
            str(m["step"]),
            m["channel"],
            m["publish_status"],
            Text(shorten(m["subject"] or m["body"], 60)),
        )
    out = console()
    out.print(table)
    out.print(f"{len(rows)} message(s)")


def _review(
    message_ids: tuple[int, ...], decide: Callable[[Session, int], Any], as_json: bool
) -> None:
    with transaction() as session:
        results = [decide(session, message_id) for message_id in message_ids]
    rows = [
        {
            "message_id": r.message_id,
            "publish_status": r.publish_status,
            "queued": r.queued,
            "publish_action_id": r.publish_action_id,
        }
        for r in results
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        queued = f", publish action {row['publish_action_id']}" if row["queued"] else ""
        console().print(f"message {row['message_id']}: {row['publish_status']}{queued}")


@messages.command("approve")
@click.argument("message_ids", nargs=-1, type=int, required=True, metavar="ID...")
@click.option("--reviewer", "-r", help="Who approves (default: your user and host).")
@click.option("--note", help="A note kept with the decision.")
@json_option
def messages_approve(
    message_ids: tuple[int, ...], reviewer: str | None, note: str | None, as_json: bool
) -> None:
    """Approve DRAFT messages; each one's publish is queued when its campaign can send."""
    from aicmo.cam import review

    who = reviewer or operator_name()
    _review(message_ids, lambda s, mid: review.approve(s, mid, who, note), as_json)


@messages.command("reject")
@click.argument("message_ids", nargs=-1, type=int, required=True, metavar="ID...")
@click.option("--reviewer", "-r", help="Who rejects (default: your user and host).")
@click.option("--reason", help="Why (kept with the decision).")
@json_option
def messages_reject(
    message_ids: tuple[int, ...], reviewer: str | None, reason: str | None, as_json: bool
) -> None:
    """Reject messages: they are never sent, and their lead waits for a person."""
    from aicmo.cam import review

    who = reviewer or operator_name()
    _review(message_ids, lambda s, mid: review.reject(s, mid, who, reason), as_json)


# -- the demo ------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Where the demo's database, broker folder, artifacts and logs go (wiped first).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=5),
    default=120.0,
    show_default=True,
    help="Give up on a step that has not finished after this many seconds.",
)
def demo(directory: Path, timeout: float) -> None:
    """Run the whole flow on the embedded default, with no servers.

    Creates a SQLite schema through Alembic, starts a real Celery worker and beat on the
    file-based broker, runs the demo flow (campaign ticks, review, publishing in proof
    mode, where aicmo.cam is installed), shows one action failing into the dead-letter
    queue and being replayed to success, and ends with a summary. Ctrl-C stops it and its
    processes.
    """
    from aicmo.demo.runner import DemoError, run_demo

    try:
        run_demo(directory, timeout=timeout)
    except DemoError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console().print("[yellow]demo interrupted; its worker and beat are stopped[/]")
        sys.exit(130)


from aicmo.cli_doctor import doctor as _doctor  # noqa: E402

main.add_command(_doctor)

if __name__ == "__main__":  # pragma: no cover
    main()
