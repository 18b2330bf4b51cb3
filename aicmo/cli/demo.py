"""`aicmo demo`: the whole flow on the embedded default."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aicmo.cli.base import console, fail, main


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
        _print_console_hint(directory)
    except DemoError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console().print("[yellow]demo interrupted; its worker and beat are stopped[/]")
        sys.exit(130)


def _print_console_hint(directory: Path) -> None:
    """How to see the demo's data in the console: a user for it, and `aicmo serve` with the
    demo's settings (the demo set them in this process's environment)."""
    import os
    import secrets
    import shlex

    from aicmo.ops.users import add_user

    password = secrets.token_urlsafe(12)
    add_user("demo", "admin", password, by="aicmo demo")
    names = ("AICMO_DATABASE_URL", "AICMO_BROKER_URL", "AICMO_BROKER_DIR", "AICMO_ARTIFACT_DIR")
    settings = " ".join(f"{name}={shlex.quote(os.environ[name])}" for name in names)
    out = console()
    out.print("\n[bold]open the console on the demo's data[/]:")
    out.print(f"  {settings} aicmo serve", soft_wrap=True)
    out.print(f"  then http://127.0.0.1:8000 and log in as [bold]demo[/] / {password}")
