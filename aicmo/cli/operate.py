"""`aicmo stats`, `aicmo pause`, `aicmo resume` and `aicmo health`."""

from __future__ import annotations

import sys

import click
from rich.table import Table
from rich.text import Text

from aicmo.cli.base import (
    STATUS_NAMES,
    STATUS_STYLE,
    ago,
    console,
    echo_json,
    json_option,
    main,
    operator_name,
)
from aicmo.ops import control
from aicmo.ops import health as health_ops
from aicmo.ops import stats as stats_ops


@main.command()
@json_option
@click.option(
    "--prometheus", is_flag=True, help="Print the Prometheus text format (for a textfile scrape)."
)
def stats(as_json: bool, prometheus: bool) -> None:
    """Counts by type and status, the oldest READY action's age, DLQ size, pauses, last sweep."""
    from aicmo.orchestration.stats import prometheus_text

    if as_json and prometheus:
        raise click.UsageError("--json and --prometheus are exclusive")
    found = stats_ops.stats()
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


@main.command()
@click.option("--type", "-t", "action_type", help="Pause one action type (default: all).")
@click.option("--reason", "-r", help="Why (shown by `aicmo stats` and in the logs).")
@json_option
def pause(action_type: str | None, reason: str | None, as_json: bool) -> None:
    """Stop workers from starting actions (all, or one type) until `aicmo resume`.

    Running actions finish; waiting ones stay waiting, with no attempt spent.
    """
    result = control.pause(action_type, reason, by=operator_name())
    if as_json:
        echo_json(result)
        return
    scope = result["paused"]
    console().print(f"[yellow]paused[/] {'all action types' if scope == 'all' else scope}")


@main.command()
@click.option("--type", "-t", "action_type", help="Resume one action type (default: all).")
@json_option
def resume(action_type: str | None, as_json: bool) -> None:
    """Lift a pause; the actions it held back are sent at once."""
    result = control.resume(action_type, by=operator_name())
    if as_json:
        echo_json(result)
        return
    scope = result["resumed"]
    console().print(
        f"[green]resumed[/] {'all action types' if scope == 'all' else scope}: "
        f"{result['held']} waiting action(s), {result['sent']} sent now"
    )


@main.command()
@click.option(
    "--check",
    "-c",
    "checks",
    multiple=True,
    type=click.Choice(health_ops.HEALTH_CHECKS),
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
    report = health_ops.health(checks, timeout)
    if as_json:
        echo_json(report)
    else:
        table = Table("check", "state", "detail", title="aicmo health")
        for r in report["checks"]:
            table.add_row(
                r["name"],
                Text("ok", "green") if r["ok"] else Text("FAIL", "bold red"),
                r["detail"],
            )
        console().print(table)
    if not report["healthy"]:
        sys.exit(1)
