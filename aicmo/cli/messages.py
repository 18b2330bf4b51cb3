"""`aicmo messages ...`: the review gate (list, approve which publishes, reject)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from aicmo.cli.base import console, echo_json, json_option, main, operator_name, shorten
from aicmo.ops import review as ops


@main.group()
def messages() -> None:
    """Review outreach messages: list, approve (which publishes), reject."""


@messages.command("ls")
@click.option("--campaign", "-c", "campaign_id", type=int, help="Only this campaign.")
@click.option(
    "--status",
    "-s",
    type=click.Choice(list(ops.PUBLISH_STATUSES), case_sensitive=False),
    help="Only this publish status (DRAFT: waiting for review).",
)
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def messages_ls(campaign_id: int | None, status: str | None, limit: int, as_json: bool) -> None:
    """List outreach messages, oldest first."""
    rows = ops.list_messages(campaign_id, status, limit=limit)
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


def _print_decisions(rows: list[dict[str, Any]], as_json: bool) -> None:
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
    _print_decisions(ops.approve(message_ids, reviewer or operator_name(), note), as_json)


@messages.command("reject")
@click.argument("message_ids", nargs=-1, type=int, required=True, metavar="ID...")
@click.option("--reviewer", "-r", help="Who rejects (default: your user and host).")
@click.option("--reason", help="Why (kept with the decision).")
@json_option
def messages_reject(
    message_ids: tuple[int, ...], reviewer: str | None, reason: str | None, as_json: bool
) -> None:
    """Reject messages: they are never sent, and their lead waits for a person."""
    _print_decisions(ops.reject(message_ids, reviewer or operator_name(), reason), as_json)
