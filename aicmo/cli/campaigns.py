"""`aicmo campaigns ...` and `aicmo leads import`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from aicmo.cli.base import console, echo_json, json_option, main, operator_name, read_payload
from aicmo.ops import campaigns as ops
from aicmo.ops import review as review_ops


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
        if c.get("brake_reason"):
            status += f" (braked: {c['brake_reason']})"
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
    data = read_payload(spec, "--spec")
    if not isinstance(data, dict):
        raise click.BadParameter("the spec must be a JSON object", param_hint="--spec")
    row = ops.create(data, activate=activate)
    if as_json:
        echo_json(row)
        return
    console().print(f"campaign {row['id']} created ({row['status']})")


@campaigns.command("ls")
@click.option(
    "--status",
    type=click.Choice(list(ops.CAMPAIGN_STATUSES), case_sensitive=False),
    help="Only campaigns in this status.",
)
@json_option
def campaigns_ls(status: str | None, as_json: bool) -> None:
    """List campaigns."""
    rows = ops.list_campaigns(status)
    if as_json:
        echo_json(rows)
        return
    print_campaigns(rows)


@campaigns.command("show")
@click.argument("campaign_id", type=int)
@json_option
def campaigns_show(campaign_id: int, as_json: bool) -> None:
    """Show a campaign with today's sends against its daily limit and its daily metrics."""
    data = ops.detail(campaign_id)
    if as_json:
        echo_json(data)
        return
    print_campaigns([data], title=f"campaign {campaign_id}")
    out = console()
    out.print(
        f"sent today {data['sent_today']} of {data['daily_send_limit']}"
        f" ({data['in_flight']} in flight); kill switch {'ON' if data['kill_switch'] else 'off'}"
    )
    if data["metrics"]:
        table = Table("date", "leads", "drafted", "approved", "rejected", "published", "failed")
        for m in data["metrics"]:
            table.add_row(
                m["date"],
                *(
                    str(m[k])
                    for k in (
                        "leads_captured",
                        "messages_drafted",
                        "messages_approved",
                        "messages_rejected",
                        "messages_published",
                        "messages_failed",
                    )
                ),
            )
        out.print(table)


def _campaign_transition(campaign_id: int, verb: str, as_json: bool) -> None:
    row = ops.transition(campaign_id, verb, operator_name())
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


@campaigns.command("resume")
@click.argument("campaign_id", type=int)
@json_option
def campaigns_resume(campaign_id: int, as_json: bool) -> None:
    """Kill switch off and ACTIVE again (from PAUSED); the publishes it stopped are replayed.

    This is also how an automatic brake (complaint or hard-bounce rate) is lifted: the reason
    is cleared. A campaign whose sending domain is braked needs `release-domain` first."""
    _campaign_transition(campaign_id, "resume", as_json)


@campaigns.command("brakes")
@json_option
def campaigns_brakes(as_json: bool) -> None:
    """Sending domains braked by their complaint or hard-bounce rate (every campaign sending
    from one stays paused until the domain is released)."""
    from aicmo.ops import outcomes

    rows = outcomes.domain_brakes()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console().print("no sending domain is braked")
    for row in rows:
        console().print(f"{row['domain']}: braked {row['braked_at_utc']}: {row['reason']}")


@campaigns.command("release-domain")
@click.argument("domain")
@json_option
def campaigns_release_domain(domain: str, as_json: bool) -> None:
    """Lift a sending domain's brake; its campaigns then need `resume` one by one."""
    from aicmo.ops import outcomes

    released = outcomes.release_domain(domain, operator_name())
    if as_json:
        echo_json({"domain": domain, "released": released})
        return
    console().print(f"{domain}: {'released' if released else 'was not braked'}")
    if not released:
        sys.exit(1)


@campaigns.command("kill")
@click.argument("campaign_id", type=int)
@click.option("--off", is_flag=True, help="Turn the kill switch off again.")
@json_option
def campaigns_kill(campaign_id: int, off: bool, as_json: bool) -> None:
    """The emergency stop: no tick drafts and no publish sends while it is on."""
    row = ops.set_kill_switch(campaign_id, not off, operator_name())
    if as_json:
        echo_json(row)
        return
    console().print(f"campaign {campaign_id} kill switch {'ON' if row['kill_switch'] else 'off'}")


@campaigns.command("tick")
@click.argument("campaign_id", type=int)
@json_option
def campaigns_tick(campaign_id: int, as_json: bool) -> None:
    """Enqueue a CAMPAIGN_TICK for the campaign now, outside its cadence."""
    result = ops.tick(campaign_id)
    if as_json:
        echo_json(result)
        return
    console().print(f"tick enqueued: action {result['action_id']} ({result['key']})")


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
    report = review_ops.import_leads(file, campaign_id, source)
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
