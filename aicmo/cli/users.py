"""`aicmo users ...`: the people and scripts allowed into the console and the JSON API."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from aicmo.cli.base import console, echo_json, json_option, main, operator_name
from aicmo.ops import users as ops

ROLE_NAMES = [r.value for r in ops.ROLES]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@main.group()
def users() -> None:
    """Console and API users: add, list, change, tokens.

    Roles, each including the ones before it: viewer (reads), reviewer (approves and
    rejects messages), operator (replays, cancels, pauses, campaign state and kill
    switch), admin (everything).
    """


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLE_NAMES, case_sensitive=False), required=True)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@json_option
def users_add(name: str, role: str, password_stdin: bool, as_json: bool) -> None:
    """Add a user (the password is asked for, or read with --password-stdin)."""
    row = ops.add_user(name, role, _read_password(password_stdin), by=operator_name())
    if as_json:
        echo_json(row)
        return
    console().print(f"user {row['name']} added ({row['role']})")


@users.command("ls")
@json_option
def users_ls(as_json: bool) -> None:
    """List users."""
    rows = ops.list_users()
    if as_json:
        echo_json(rows)
        return
    table = Table("name", "role", "state", "last login", title="users")
    for r in rows:
        state = "disabled" if r["disabled"] else ("locked" if r["locked_until_utc"] else "ok")
        table.add_row(r["name"], r["role"], state, r["last_login_at_utc"] or "never")
    console().print(table)


@users.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLE_NAMES, case_sensitive=False))
@click.option("--password", "new_password", is_flag=True, help="Set a new password (asked for).")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@click.option("--disable/--enable", "disabled", default=None, help="Refuse or allow its logins.")
@json_option
def users_set(
    name: str,
    role: str | None,
    new_password: bool,
    password_stdin: bool,
    disabled: bool | None,
    as_json: bool,
) -> None:
    """Change a user's role, password or state."""
    password = _read_password(password_stdin) if (new_password or password_stdin) else None
    row = ops.update_user(name, role=role, password=password, disabled=disabled)
    if as_json:
        echo_json(row)
        return
    console().print(f"user {row['name']}: {row['role']}{' (disabled)' if row['disabled'] else ''}")


@users.command("token")
@click.argument("name")
@click.option("--label", default="api", show_default=True, help="What the token is for.")
@click.option("--revoke", is_flag=True, help="Revoke every token of the user instead.")
def users_token(name: str, label: str, revoke: bool) -> None:
    """Create an API token for NAME (printed once: only its hash is kept), or --revoke."""
    if revoke:
        console().print(f"revoked {ops.revoke_tokens(name)} token(s) of {name}")
        return
    click.echo(ops.create_token(name, label))
