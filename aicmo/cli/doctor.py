"""`aicmo doctor`: the census of what nothing will move on its own (over aicmo.ops.doctor)."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from aicmo.cli.base import console, echo_json, json_option, main


def _check_names() -> list[str]:
    from aicmo.ops.doctor import CHECKS

    return [check.name for check in CHECKS]


@main.command()
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely and say what was done.")
@click.option(
    "--check",
    "-c",
    "checks",
    multiple=True,
    help="Run only this check (repeatable); `aicmo doctor --list` names them.",
)
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
@json_option
def doctor(repair: bool, checks: tuple[str, ...], list_checks: bool, as_json: bool) -> None:
    """List every action (or message) that no process will move on its own.

    Checks: actions of a type not registered here (set aside by the sweeper), READY/RETRY
    actions with no message and no resend coming, RUNNING actions whose lease is missing or
    long expired, PENDING actions the sweeper should have promoted, QUEUED messages whose
    publish action is gone or ended, campaign tick leases held by no live run. `--repair`
    re-sends, expires, promotes, re-queues and releases what it safely can; an unknown type
    is left to the operator (deploy it back, or `aicmo actions cancel`). Exits 0 when
    nothing is stranded (after repair), 1 otherwise.
    """
    from aicmo.ops import doctor as ops

    if list_checks:
        for check in ops.CHECKS:
            click.echo(f"{check.name}: {check.description}")
        return
    unknown = set(checks) - set(_check_names())
    if unknown:
        raise click.BadParameter(
            f"{', '.join(sorted(unknown))}; choose from {', '.join(_check_names())}",
            param_hint="--check",
        )
    report = ops.report(repair=repair, checks=list(checks) or None)
    if as_json:
        echo_json(report.as_dict())
    else:
        out = console()
        for line in report.repaired:
            out.print(f"[green]repaired[/] {line}")
        if report.findings:
            table = Table("check", "subject", "why", "repairable", title="stranded")
            for finding in report.findings:
                table.add_row(
                    finding.check,
                    finding.subject,
                    finding.detail,
                    "yes" if finding.repairable else "no",
                )
            out.print(table)
        out.print(
            f"[{'bold red' if report.stranded else 'green'}]{report.stranded} stranded[/]"
            + (
                " (`aicmo doctor --repair` fixes the repairable ones)"
                if report.stranded and not repair
                else ""
            )
        )
    if report.stranded:
        sys.exit(1)
