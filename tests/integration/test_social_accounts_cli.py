"""``aicmo accounts`` against the real PostgreSQL and a local Mastodon server, and the
enqueue-time length check of POST_SOCIAL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from aicmo.cli import main
from aicmo.config import reload_settings
from aicmo.db import get_engine
from aicmo.gateways.vault import new_key
from aicmo.orchestration.errors import InvalidPayload
from aicmo.orchestration.models import AOLAction
from aicmo.orchestration.queue import ActionQueue
from tests.support.fake_platforms.mastodon import FakeMastodon

TOKEN = "mastodon-token-ada"


@pytest.fixture
def keyed(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AICMO_SOCIAL_ENCRYPTION_KEYS", new_key())
    reload_settings()
    with get_engine(database_url).begin() as conn:
        conn.execute(text("DELETE FROM social_accounts"))
    yield
    monkeypatch.delenv("AICMO_SOCIAL_ENCRYPTION_KEYS")
    reload_settings()


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    fake = FakeMastodon().start()
    yield fake  # type: ignore[misc]
    fake.stop()


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args), input=input)


@pytest.mark.usefixtures("keyed")
def test_add_ls_test_rm_and_no_secret_shown(mastodon: FakeMastodon) -> None:
    added = run(
        "accounts",
        "add",
        "mastodon",
        "@ada@fake.social",
        "--base-url",
        mastodon.url,
        "--secrets-stdin",
        "--json",
        input=json.dumps({"access_token": TOKEN}),
    )
    assert added.exit_code == 0, added.output
    account_id = json.loads(added.stdout)["id"]
    listed = run("accounts", "ls", "--json")
    assert listed.exit_code == 0, listed.output
    [shown] = json.loads(listed.stdout)
    assert shown["secret_names"] == ["access_token"] and shown["status"] == "ACTIVE"
    tested = run("accounts", "test", str(account_id))
    assert tested.exit_code == 0 and "ok, @ada" in tested.output
    mastodon.revoked.add(TOKEN)
    refused = run("accounts", "test", str(account_id))
    assert refused.exit_code == 1 and "The access token was revoked" in refused.output
    flagged = json.loads(run("accounts", "ls", "--json").stdout)[0]
    assert flagged["status"] == "AUTH_FAILED"
    table = run("accounts", "ls").output
    assert "AUTH_FAILED" in table
    for output in (added.output, listed.output, tested.output, refused.output, table):
        assert TOKEN not in output
    assert run("accounts", "rm", str(account_id)).exit_code == 0
    assert json.loads(run("accounts", "ls", "--json").stdout) == []


@pytest.mark.usefixtures("keyed")
def test_bad_input_is_one_clear_line() -> None:
    missing = run(
        "accounts",
        "add",
        "linkedin",
        "Acme",
        "--secrets-stdin",
        input='{"access_token": "li-tok-9"}',
    )
    assert missing.exit_code == 1 and "linkedin needs the setting(s) author" in missing.output
    assert "li-tok-9" not in missing.output
    garbage = run("accounts", "add", "x", "@ada", "--secrets-stdin", input="not json")
    assert garbage.exit_code == 1 and "not a JSON object" in garbage.output
    assert run("accounts", "rm", "999999").exit_code == 1


def test_a_post_too_long_for_its_platform_is_refused_at_enqueue(session: Session) -> None:
    before = session.scalar(select(func.count()).select_from(AOLAction))
    with pytest.raises(InvalidPayload, match="content is too long for bluesky: 301 graphemes"):
        ActionQueue.enqueue_action(
            session, "POST_SOCIAL", {"social_platform": "bluesky", "content": "a" * 301}, "k-long"
        )
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AOLAction)) == before
