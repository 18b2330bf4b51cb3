"""``aicmo accounts``: connect, list, test and remove social accounts (thin over
:mod:`aicmo.ops.accounts`).

Secrets are never command-line arguments (other users see those in ``ps``): they are asked
for with a hidden prompt, or read as a JSON object from standard input (``--secrets-stdin``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from aicmo.cli.base import main
from aicmo.ops import accounts as ops


def _config(values: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--set")
        found[name.strip()] = value
    return found


@main.group()
def accounts() -> None:
    """Social accounts the native gateways post with (credentials encrypted at rest)."""


@accounts.command("add")
@click.argument("platform", type=click.Choice(["mastodon", "bluesky", "linkedin", "x"]))
@click.argument("handle")
@click.option("--campaign", "campaign_id", type=int, help="Owner campaign (default: global).")
@click.option(
    "--base-url", help="Server / API root (Mastodon: the instance, e.g. https://mastodon.social)."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A non-secret setting: author=urn:li:organization:1 (LinkedIn), user_id=... (X), "
    "client_id=... (OAuth refresh), max_characters=... (Mastodon).",
)
@click.option(
    "--secret",
    "secret_names",
    multiple=True,
    metavar="NAME",
    help="A secret to prompt for (hidden); default: the platform's required ones "
    "(access_token; Bluesky: app_password). Optional: refresh_token, client_secret.",
)
@click.option("--secrets-stdin", is_flag=True, help="Read the secrets as a JSON object from stdin.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def add(
    platform: str,
    handle: str,
    campaign_id: int | None,
    base_url: str | None,
    settings: tuple[str, ...],
    secret_names: tuple[str, ...],
    secrets_stdin: bool,
    as_json: bool,
) -> None:
    """Connect a PLATFORM account HANDLE."""
    from aicmo.db import session_scope

    if secrets_stdin:
        try:
            secrets: Any = json.loads(sys.stdin.read())
        except ValueError:
            raise click.ClickException(
                "--secrets-stdin: standard input is not a JSON object"
            ) from None
        if not isinstance(secrets, dict):
            raise click.ClickException("--secrets-stdin: standard input is not a JSON object")
    else:
        names = secret_names or ops.REQUIRED_SECRETS[platform]
        secrets = {name: click.prompt(name, hide_input=True) for name in names}
    values = {
        "platform": platform,
        "handle": handle,
        "campaign_id": campaign_id,
        "base_url": base_url,
        "config": _config(settings),
        "secrets": secrets,
    }
    with session_scope() as session:
        view = ops.add_account(session, values)
    if as_json:
        click.echo(json.dumps(view.as_dict()))
    else:
        click.echo(
            f"account {view.id}: {view.platform} {view.handle} connected; check it with "
            f"`aicmo accounts test {view.id}`"
        )


@accounts.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List accounts: status (AUTH_FAILED: the platform refused them), never a secret."""
    from aicmo.db import session_scope

    with session_scope() as session:
        views = ops.list_accounts(session)
    if as_json:
        click.echo(json.dumps([v.as_dict() for v in views]))
        return
    table = Table("id", "platform", "handle", "campaign", "status", "secrets", "last error")
    for v in views:
        style = "green" if v.status == "ACTIVE" else "red"
        table.add_row(
            str(v.id),
            v.platform,
            v.handle,
            str(v.campaign_id or "global"),
            f"[{style}]{v.status}[/]",
            ", ".join(v.secret_names),
            (v.last_error or "")[:80],
        )
    Console().print(table)


@accounts.command("rm")
@click.argument("account_id", type=int)
def rm(account_id: int) -> None:
    """Remove an account (its credentials are deleted)."""
    from aicmo.db import session_scope

    with session_scope() as session:
        view = ops.remove_account(session, account_id)
    click.echo(f"account {view.id}: {view.platform} {view.handle} removed")


@accounts.command("test")
@click.argument("account_id", type=int)
def test(account_id: int) -> None:
    """Ask the platform who the credentials are (clears AUTH_FAILED on success)."""
    click.echo(f"account {account_id}: ok, {ops.check_account(account_id)}")


@accounts.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt every account with the first key of AICMO_SOCIAL_ENCRYPTION_KEYS."""
    from aicmo.db import session_scope

    with session_scope() as session:
        count = ops.rotate_keys(session)
    click.echo(f"{count} account(s) re-encrypted with the newest key")


@accounts.command("new-key")
def new_key() -> None:
    """Print a new Fernet key (prepend it to AICMO_SOCIAL_ENCRYPTION_KEYS)."""
    from aicmo.gateways.vault import new_key as make

    click.echo(make())
