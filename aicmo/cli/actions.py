"""`aicmo types`, `aicmo enqueue` and `aicmo actions ...` (list, show, replay, cancel)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.table import Table
from rich.text import Text

from aicmo.cli.base import (
    STATUS_NAMES,
    ago,
    console,
    echo_json,
    json_option,
    main,
    operator_name,
    parse_when,
    read_payload,
    shorten,
    styled_status,
)
from aicmo.ops import actions as ops


@main.command("types")
@json_option
def types_command(as_json: bool) -> None:
    """List the registered action types, their queue, retry policy and time limits."""
    rows = ops.types()
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
    data = read_payload(payload)
    when = parse_when(at)
    result = ops.enqueue(action_type, data, key, when)
    if as_json:
        echo_json(result)
        return
    verb = "enqueued" if result["created"] else "already enqueued (same key and payload)"
    console().print(
        f"{verb}: action [bold]{result['id']}[/] {result['action_type']} ",
        styled_status(result["status"]),
        f" key={result['idempotency_key']}",
        sep="",
    )


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
    rows = ops.list_actions(ops.ActionFilter(statuses=statuses, types=types), limit=limit)
    if as_json:
        echo_json(rows)
        return
    now = datetime.now(UTC)
    table = Table()
    for name in ("id", "type", "status", "tries", "due"):
        table.add_column(name, no_wrap=True)
    table.add_column("key", max_width=28)
    table.add_column("last error", overflow="fold")
    for a in rows:
        table.add_row(
            str(a["id"]),
            a["action_type"],
            styled_status(a["status"]),
            f"{a['attempts']}/{a['max_attempts']}",
            ago(datetime.fromisoformat(a["not_before_utc"]), now),
            Text(shorten(a["idempotency_key"], 28)),
            Text(shorten(a["last_error"], 50)),
        )
    out = console()
    out.print(table)
    out.print(f"{len(rows)} action(s)" + (f" (limit {limit})" if len(rows) == limit else ""))


@actions.command("show")
@click.argument("action_id", type=int)
@json_option
def actions_show(action_id: int, as_json: bool) -> None:
    """Show one action with its payload, result and execution log."""
    data = ops.show_action(action_id)
    data.pop("can_replay")
    data.pop("can_cancel")
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
        "waiting",
        "idempotency_key",
        "not_before_utc",
        "created_at_utc",
        "started_at_utc",
        "finished_at_utc",
        "priority",
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
    if bool(action_ids) == dlq:
        raise click.UsageError("give action ids or --dlq (one of the two)")
    if action_type and not dlq:
        raise click.UsageError("--type goes with --dlq")
    by = operator_name()
    if dlq:
        replayed = ops.replay_dead_letters(action_type, by=by, limit=limit)
    else:
        replayed = ops.replay(action_ids, by=by)
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
    cancelled = ops.cancel(action_ids, by=operator_name())
    if as_json:
        echo_json({"cancelled": cancelled})
        return
    console().print(f"cancelled {len(cancelled)} action(s): {', '.join(map(str, cancelled))}")
