"""`aicmo db`: the schema (Alembic migrations)."""

from __future__ import annotations

import click
from sqlalchemy.exc import DBAPIError

from aicmo.cli.base import console, echo_json, fail, json_option, main


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
