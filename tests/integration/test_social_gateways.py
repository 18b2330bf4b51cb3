"""The four native social gateways against local servers speaking each platform's documented
API, with their accounts in the real PostgreSQL (credentials encrypted).

Each platform: one post per action (including a timeout after the platform accepted the
post), a 429 with the platform's reset header, an expired token (refreshed) and a revoked one
(permanent, account flagged), content refused with the platform's message, and metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from aicmo.config import Settings, reload_settings
from aicmo.db import get_engine
from aicmo.gateways.accounts import AccountStatus, AccountStore, AccountUnusable, SocialAccount
from aicmo.gateways.bluesky import tid_for
from aicmo.gateways.errors import BadCredentials, GatewayTransientError
from aicmo.gateways.factory import gateway_for, native_gateway
from aicmo.gateways.ports import SocialPost
from aicmo.gateways.social import ContentRefused, NativeGateway
from aicmo.gateways.vault import Vault, new_key
from aicmo.ops import accounts as ops
from aicmo.orchestration.adapters.social_adapter import handle_post_social
from aicmo.orchestration.errors import Deferred
from aicmo.orchestration.executor import Executor, OutcomeKind
from aicmo.orchestration.manager import replay
from aicmo.orchestration.queue import ActionQueue
from tests.support.campaigns import recording_dispatcher
from tests.support.fake_platforms.base import FakePlatform, Reply
from tests.support.fake_platforms.bluesky import FakeBluesky
from tests.support.fake_platforms.linkedin import FakeLinkedIn
from tests.support.fake_platforms.mastodon import FakeMastodon
from tests.support.fake_platforms.x import USER_ID, FakeX

KEY = new_key()
TIMEOUT = 1.5  # a hanging platform costs the test this long


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        social_encryption_keys=[KEY],  # type: ignore[list-item]
        social_timeout_seconds=TIMEOUT,
        social_connect_timeout_seconds=1,
        social_refresh_wait_seconds=5,
    )


@pytest.fixture
def accounts_table(database_url: str) -> Iterator[None]:
    with get_engine(database_url).begin() as conn:
        conn.execute(text("DELETE FROM social_accounts"))
    yield


def started(fake: FakePlatform) -> Iterator[Any]:
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    yield from started(FakeMastodon())


@pytest.fixture
def bluesky() -> Iterator[FakeBluesky]:
    yield from started(FakeBluesky())


@pytest.fixture
def linkedin() -> Iterator[FakeLinkedIn]:
    yield from started(FakeLinkedIn())


@pytest.fixture
def x_api() -> Iterator[FakeX]:
    yield from started(FakeX())


def connect(session: Session, settings: Settings, **values: Any) -> NativeGateway:
    with session.begin():
        view = ops.add_account(session, values, settings)
    store = AccountStore(get_engine(settings.database_url), Vault([KEY]))
    return gateway_for(store.load(view.id), store, settings)


def reload(gateway: NativeGateway) -> NativeGateway:
    """The same account in a new gateway: what the next attempt (another process) builds."""
    return gateway_for(gateway.store.load(gateway.account.id), gateway.store, gateway.settings)


def row(session: Session, account_id: int) -> SocialAccount:
    found = session.scalars(
        select(SocialAccount)
        .where(SocialAccount.id == account_id)
        .execution_options(populate_existing=True)
    ).one()
    session.rollback()
    return found


def post(text_: str, attempt: int = 1, created_at: datetime | None = None) -> SocialPost:
    created = created_at or datetime.now(UTC) - timedelta(seconds=1)
    return SocialPost("x", text_, None, created_at=created, attempt=attempt)


pytestmark = pytest.mark.usefixtures("accounts_table")


# -- Mastodon ------------------------------------------------------------------------------


def mastodon_account(session: Session, settings: Settings, fake: FakeMastodon) -> NativeGateway:
    return connect(
        session,
        settings,
        platform="mastodon",
        handle="@ada@fake.social",
        base_url=fake.url,
        secrets={"access_token": "mastodon-token-ada"},
        config={"max_characters": 1000},  # the server may allow more; this one says 500
    )


def test_mastodon_posts_once_with_the_action_key(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    sent = gateway.post(post("Hello fediverse"), "cam_publish:1")
    [request] = mastodon.seen("POST", "/api/v1/statuses")
    assert request.headers["idempotency-key"] == "cam_publish:1"
    assert request.json() == {"status": "Hello fediverse", "visibility": "public"}
    assert [s["id"] for s in mastodon.posts_with("Hello fediverse")] == [sent.external_id]


def test_mastodon_timeout_after_accepting_then_retry_posts_once(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    mastodon.hang_once_after_accepting("POST", "/api/v1/statuses")
    with pytest.raises(GatewayTransientError, match="timed out"):
        gateway.post(post("Only once"), "k-once")
    again = reload(gateway).post(post("Only once", attempt=2), "k-once")
    assert len(mastodon.seen("POST", "/api/v1/statuses")) == 2  # the retry did reach it
    assert [s["id"] for s in mastodon.posts_with("Only once")] == [again.external_id]


def test_mastodon_429_is_transient_until_its_reset(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    mastodon.queue("POST", "/api/v1/statuses", mastodon.rate_limited(reset_in=120))
    with pytest.raises(GatewayTransientError) as caught:
        gateway.post(post("Busy"), "k-busy")
    assert caught.value.retry_after is not None and 110 <= caught.value.retry_after <= 121
    assert "HTTP 429" in str(caught.value)
    assert mastodon.posts_with("Busy") == []


def test_mastodon_revoked_token_is_permanent_and_flags_the_account(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    mastodon.revoked.add("mastodon-token-ada")
    with pytest.raises(BadCredentials, match="The access token was revoked") as caught:
        gateway.post(post("Hi"), "k-revoked")
    flagged = row(session, gateway.account.id)
    assert flagged.status == AccountStatus.AUTH_FAILED
    for shown in (str(caught.value), flagged.last_error or ""):
        assert "mastodon-token-ada" not in shown
    before = len(mastodon.requests)
    with pytest.raises(AccountUnusable, match="AUTH_FAILED"):
        reload(gateway).post(post("Hi", attempt=2), "k-revoked")
    assert len(mastodon.requests) == before  # a flagged account does not even try


def test_mastodon_refused_content_is_permanent_with_its_message(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    with pytest.raises(ContentRefused, match="Text character limit of 500 exceeded"):
        gateway.post(post("a" * 600), "k-long")


def test_mastodon_metrics_per_status(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    sent = gateway.post(post("Count me"), "k-metrics")
    assert sent.external_id is not None
    mastodon.engage(sent.external_id, favourites=4, reblogs=2, replies=1)
    assert gateway.post_metrics([sent.external_id]) == {
        sent.external_id: {"favourites": 4.0, "reblogs": 2.0, "replies": 1.0}
    }


# -- Bluesky -------------------------------------------------------------------------------


def bluesky_account(session: Session, settings: Settings, fake: FakeBluesky) -> NativeGateway:
    return connect(
        session,
        settings,
        platform="bluesky",
        handle="ada.bsky.social",
        base_url=fake.url,
        secrets={"app_password": "app-pass-ada-1234"},
    )


def test_bluesky_posts_with_a_record_key_derived_from_the_action(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    created = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    sent = gateway.post(post("Hello sky", created_at=created), "cam_publish:7")
    [create] = bluesky.seen("POST", "/xrpc/com.atproto.repo.createRecord")
    body = create.json()
    assert body["rkey"] == tid_for("cam_publish:7", created)
    assert body["collection"] == "app.bsky.feed.post"
    assert body["record"]["$type"] == "app.bsky.feed.post" and body["record"]["text"] == "Hello sky"
    assert (
        sent.external_id
        == f"at://did:plc:ada000000000000000000000/app.bsky.feed.post/{body['rkey']}"
    )
    assert len(bluesky.seen("POST", "/xrpc/com.atproto.server.createSession")) == 1


def test_bluesky_timeout_after_accepting_then_retry_posts_once(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    created = datetime.now(UTC) - timedelta(seconds=3)
    bluesky.hang_once_after_accepting("POST", "/xrpc/com.atproto.repo.createRecord")
    with pytest.raises(GatewayTransientError, match="timed out"):
        gateway.post(post("Only once", created_at=created), "k-sky-once")
    again = reload(gateway).post(post("Only once", 2, created), "k-sky-once")
    assert len(bluesky.seen("POST", "/xrpc/com.atproto.repo.createRecord")) == 2
    assert [r["uri"] for r in bluesky.posts_with("Only once")] == [again.external_id]
    assert "earlier attempt" in again.detail


def test_bluesky_expired_token_is_refreshed_and_the_refresh_jwt_rotates(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    gateway.post(post("First"), "k-sky-1")
    first = reload(gateway).account
    bluesky.expire_all_access_tokens()
    later = reload(gateway)
    later.post(post("Second"), "k-sky-2")
    assert len(bluesky.seen("POST", "/xrpc/com.atproto.server.refreshSession")) == 1
    now = later.account
    assert now.version == first.version + 1
    assert now.secrets["refresh_jwt"] != first.secrets["refresh_jwt"]
    assert len(bluesky.posts_with("Second")) == 1


def test_two_workers_never_refresh_one_account_at_once(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    gateway.post(post("Warm up"), "k-warm")
    bluesky.expire_all_access_tokens()
    bluesky.refresh_delay = 0.5  # long enough for the second worker to meet the lease
    workers = [reload(gateway), reload(gateway)]
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = workers[i].post(post(f"Racer {i}"), f"k-race-{i}")
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # The refresh JWT is single-use: a second refresh would have been refused (revoked).
    assert len(bluesky.seen("POST", "/xrpc/com.atproto.server.refreshSession")) == 1
    assert all(not isinstance(r, Exception) for r in results), results
    assert reload(gateway).account.status == AccountStatus.ACTIVE


def test_a_post_waiting_on_another_workers_refresh_is_deferred_not_failed(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    gateway.post(post("Warm up"), "k-warm-2")
    bluesky.expire_all_access_tokens()
    waiting = reload(gateway)
    waiting.settings = settings.model_copy(update={"social_refresh_wait_seconds": 0.5})
    # Another worker holds the refresh (and is slow, or died holding it).
    assert gateway.store.claim_refresh(waiting.account.id, waiting.account.version, 60)
    with pytest.raises(Deferred, match="another worker is refreshing") as caught:
        waiting.post(post("Patience"), "k-patience")
    assert caught.value.retry_after == settings.social_refresh_lease_seconds
    assert bluesky.seen("POST", "/xrpc/com.atproto.server.refreshSession") == []


def test_bluesky_revoked_app_password_is_permanent_and_flags_the_account(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    gateway.post(post("Before"), "k-before")
    bluesky.revoke_app_password("ada.bsky.social")
    with pytest.raises(BadCredentials, match="Invalid identifier or password") as caught:
        reload(gateway).post(post("After"), "k-after")
    flagged = row(session, gateway.account.id)
    assert flagged.status == AccountStatus.AUTH_FAILED
    assert "app-pass-ada-1234" not in str(caught.value) + (flagged.last_error or "")


def test_bluesky_429_is_transient_until_its_reset(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    bluesky.queue("POST", "/xrpc/com.atproto.repo.createRecord", bluesky.rate_limited(300))
    with pytest.raises(GatewayTransientError) as caught:
        gateway.post(post("Busy sky"), "k-sky-busy")
    assert caught.value.retry_after is not None and 290 <= caught.value.retry_after <= 301


def test_bluesky_refused_record_is_permanent_with_its_message(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    gateway.account.config["max_characters"] = 1000  # get past our own check
    with pytest.raises(ContentRefused, match=r"InvalidRecord: .*300 graphemes"):
        gateway.post(post("b" * 400), "k-sky-long")


def test_bluesky_too_long_is_refused_before_any_request(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    with pytest.raises(ContentRefused, match="301 graphemes, over bluesky's limit of 300"):
        gateway.post(post("c" * 301), "k-sky-301")
    assert bluesky.requests == []


def test_bluesky_metrics_per_post(
    session: Session, settings: Settings, bluesky: FakeBluesky
) -> None:
    gateway = bluesky_account(session, settings, bluesky)
    sent = gateway.post(post("Like me"), "k-sky-metrics")
    assert sent.external_id is not None
    bluesky.engage(sent.external_id, likes=7, reposts=3, replies=2)
    assert gateway.post_metrics([sent.external_id]) == {
        sent.external_id: {"likes": 7.0, "reposts": 3.0, "replies": 2.0, "quotes": 0.0}
    }


# -- LinkedIn ------------------------------------------------------------------------------


def linkedin_account(
    session: Session, settings: Settings, fake: FakeLinkedIn, **secrets: str
) -> NativeGateway:
    return connect(
        session,
        settings,
        platform="linkedin",
        handle="Acme Page",
        base_url=fake.url,
        config={
            "author": "urn:li:organization:2414183",
            "client_id": "li-client",
            "token_url": f"{fake.url}/oauth/v2/accessToken",
        },
        secrets={"access_token": "li-access-1", **secrets},
    )


TEXT_LI = "Big news (today) #launch"


def test_linkedin_posts_once_and_a_retry_after_a_timeout_finds_it(
    session: Session, settings: Settings, linkedin: FakeLinkedIn
) -> None:
    gateway = linkedin_account(session, settings, linkedin)
    created = datetime.now(UTC) - timedelta(seconds=2)
    linkedin.hang_once_after_accepting("POST", "/rest/posts")
    with pytest.raises(GatewayTransientError, match="timed out"):
        gateway.post(post(TEXT_LI, created_at=created), "k-li")
    again = reload(gateway).post(post(TEXT_LI, 2, created), "k-li")
    [create] = linkedin.seen("POST", "/rest/posts")  # the retry read, and did not write
    assert create.headers["linkedin-version"] == settings.linkedin_api_version
    escaped = r"Big news \(today\) {hashtag|\#|launch}"  # little text format
    assert create.json()["commentary"] == escaped
    assert [p["id"] for p in linkedin.posts_with(escaped)] == [again.external_id]


def test_linkedin_expired_token_is_refreshed(
    session: Session, settings: Settings, linkedin: FakeLinkedIn
) -> None:
    gateway = linkedin_account(
        session, settings, linkedin, refresh_token="li-refresh-1", client_secret="li-client-secret"
    )
    linkedin.expired.add("li-access-1")
    sent = gateway.post(post("Fresh token"), "k-li-fresh")
    assert sent.external_id is not None and sent.external_id.startswith("urn:li:share:")
    [refresh] = linkedin.seen("POST", "/oauth/v2/accessToken")
    assert refresh.form()["grant_type"] == "refresh_token"
    assert reload(gateway).account.secrets["access_token"] == "li-access-2"


def test_linkedin_revoked_token_is_permanent_and_flags_the_account(
    session: Session, settings: Settings, linkedin: FakeLinkedIn
) -> None:
    gateway = linkedin_account(
        session, settings, linkedin, refresh_token="li-refresh-1", client_secret="li-client-secret"
    )
    linkedin.revoked.add("li-access-1")
    with pytest.raises(BadCredentials, match="revoked by the user"):
        gateway.post(post("Nope"), "k-li-revoked")
    assert linkedin.seen("POST", "/oauth/v2/accessToken") == []  # revoked: no refresh
    assert row(session, gateway.account.id).status == AccountStatus.AUTH_FAILED


def test_linkedin_duplicate_on_a_first_attempt_is_refused_with_its_message(
    session: Session, settings: Settings, linkedin: FakeLinkedIn
) -> None:
    gateway = linkedin_account(session, settings, linkedin)
    gateway.post(post("Same words"), "k-li-a")
    with pytest.raises(ContentRefused, match="Content is a duplicate of urn:li:share:"):
        gateway.post(post("Same words"), "k-li-b")


# -- X -------------------------------------------------------------------------------------


def x_account(session: Session, settings: Settings, fake: FakeX, **secrets: str) -> NativeGateway:
    return connect(
        session,
        settings,
        platform="x",
        handle="@ada",
        base_url=fake.url,
        config={"user_id": USER_ID, "client_id": "x-client"},
        secrets={"access_token": "x-access-1", **secrets},
    )


def test_x_timeout_after_accepting_then_retry_posts_once(
    session: Session, settings: Settings, x_api: FakeX
) -> None:
    gateway = x_account(session, settings, x_api)
    created = datetime.now(UTC) - timedelta(seconds=2)
    x_api.hang_once_after_accepting("POST", "/2/tweets")
    with pytest.raises(GatewayTransientError, match="timed out"):
        gateway.post(post("Ship it", created_at=created), "k-x")
    again = reload(gateway).post(post("Ship it", 2, created), "k-x")
    assert len(x_api.seen("POST", "/2/tweets")) == 1
    assert [t["id"] for t in x_api.posts_with("Ship it")] == [again.external_id]


def test_x_429_is_transient_until_x_rate_limit_reset(
    session: Session, settings: Settings, x_api: FakeX
) -> None:
    gateway = x_account(session, settings, x_api)
    x_api.queue("POST", "/2/tweets", x_api.rate_limited(600))
    with pytest.raises(GatewayTransientError) as caught:
        gateway.post(post("Busy X"), "k-x-busy")
    assert caught.value.retry_after is not None and 590 <= caught.value.retry_after <= 601


def test_x_expired_token_is_refreshed_with_rotation(
    session: Session, settings: Settings, x_api: FakeX
) -> None:
    gateway = x_account(
        session, settings, x_api, refresh_token="x-refresh-1", client_secret="x-client-secret"
    )
    x_api.expired.add("x-access-1")
    sent = gateway.post(post("Refreshed"), "k-x-refresh")
    assert [t["id"] for t in x_api.posts_with("Refreshed")] == [sent.external_id]
    secrets = reload(gateway).account.secrets
    assert (secrets["access_token"], secrets["refresh_token"]) == ("x-access-2", "x-refresh-2")


def test_x_failed_refresh_is_permanent_and_flags_the_account(
    session: Session, settings: Settings, x_api: FakeX
) -> None:
    gateway = x_account(
        session, settings, x_api, refresh_token="x-refresh-gone", client_secret="x-client-secret"
    )
    x_api.expired.add("x-access-1")
    with pytest.raises(BadCredentials, match="Value passed for the token was invalid"):
        gateway.post(post("Nope"), "k-x-gone")
    flagged = row(session, gateway.account.id)
    assert flagged.status == AccountStatus.AUTH_FAILED
    assert "x-refresh-gone" not in (flagged.last_error or "")


def test_x_metrics_are_public_metrics(session: Session, settings: Settings, x_api: FakeX) -> None:
    gateway = x_account(session, settings, x_api)
    sent = gateway.post(post("Numbers"), "k-x-metrics")
    assert sent.external_id is not None
    x_api.tweets[sent.external_id]["public_metrics"]["like_count"] = 5
    numbers = gateway.post_metrics([sent.external_id])[sent.external_id]
    assert numbers["like"] == 5.0 and numbers["retweet"] == 0.0 and "impression" in numbers


# -- accounts: encryption at rest, key rotation, the factory's choice ------------------------


def test_credentials_are_encrypted_at_rest_and_survive_key_rotation(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    stored = session.execute(
        text("SELECT credentials::text FROM social_accounts WHERE id = :id"),
        {"id": gateway.account.id},
    ).scalar_one()
    session.rollback()
    assert "mastodon-token-ada" not in stored
    newer = new_key()
    rotated = settings.model_copy(
        update={"social_encryption_keys": [SecretStr(newer), SecretStr(KEY)]}
    )
    with session.begin():
        assert ops.rotate_keys(session, rotated) == 1
    only_new = Vault([newer])
    store = AccountStore(get_engine(settings.database_url), only_new)
    assert store.load(gateway.account.id).secrets == {"access_token": "mastodon-token-ada"}


def test_the_factory_picks_the_campaigns_own_account_else_the_global_one(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    mastodon_account(session, settings, mastodon)
    found = native_gateway("Mastodon", settings, campaign_id=123)
    assert found is not None and found.account.campaign_id is None
    assert native_gateway("bluesky", settings) is None


def test_an_account_is_refused_without_its_required_secrets(
    session: Session, settings: Settings
) -> None:
    with pytest.raises(ops.AccountError, match="linkedin needs the setting"):
        ops.add_account(
            session,
            {"platform": "linkedin", "handle": "p", "secrets": {"access_token": "tok-secret-1"}},
            settings,
        )
    with pytest.raises(ops.AccountError, match="must be one of") as caught:
        ops.add_account(
            session,
            {"platform": "myspace", "handle": "p", "secrets": {"access_token": "tok-secret-2"}},
            settings,
        )
    assert "tok-secret-2" not in str(caught.value)
    session.rollback()


def test_a_platform_echoing_the_token_never_gets_it_into_the_error(
    session: Session, settings: Settings, mastodon: FakeMastodon
) -> None:
    gateway = mastodon_account(session, settings, mastodon)
    echoed = Reply(401, {"error": "The access token is invalid: mastodon-token-ada"})
    mastodon.queue("POST", "/api/v1/statuses", echoed)
    with pytest.raises(BadCredentials) as caught:
        gateway.post(post("Echo"), "k-echo")
    assert "mastodon-token-ada" not in str(caught.value)
    assert "mastodon-token-ada" not in (row(session, gateway.account.id).last_error or "")


def test_post_social_seed_entry_point_posts_through_the_account(
    session: Session,
    settings: Settings,
    mastodon: FakeMastodon,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mastodon_account(session, settings, mastodon)
    monkeypatch.setenv("AICMO_SOCIAL_ENCRYPTION_KEYS", KEY)
    reload_settings()
    try:
        with recording_dispatcher(), session.begin():
            action = ActionQueue.enqueue_action(
                session, "POST_SOCIAL", {"social_platform": "Mastodon", "content": "Seed"}, "seed-1"
            )
        result = handle_post_social(
            session, action.id, {"social_platform": "mastodon", "content": "Seed"}
        )
    finally:
        monkeypatch.delenv("AICMO_SOCIAL_ENCRYPTION_KEYS")
        reload_settings()
    [status] = mastodon.posts_with("Seed")
    assert result["external_id"] == status["id"]
    assert mastodon.seen("POST", "/api/v1/statuses")[0].headers["idempotency-key"] == "seed-1"


def test_a_replayed_action_finds_the_post_an_earlier_run_made(
    session: Session,
    settings: Settings,
    x_api: FakeX,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay resets attempts; the execution log still says the action ran before, so the
    read-before-write lookup runs and the post is not made twice (X would refuse it)."""
    x_account(session, settings, x_api)
    for name, value in {
        "AICMO_SOCIAL_ENCRYPTION_KEYS": KEY,
        "AICMO_SOCIAL_TIMEOUT_SECONDS": str(TIMEOUT),
        "AICMO_PROOF_MODE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    try:
        with recording_dispatcher(), session.begin():
            action_id = ActionQueue.enqueue_action(
                session, "POST_SOCIAL", {"social_platform": "x", "content": "Replay me"}, "rp-1"
            ).id
        x_api.hang_once_after_accepting("POST", "/2/tweets")
        with recording_dispatcher():
            assert Executor().run(action_id, "POST_SOCIAL").kind is OutcomeKind.RETRY
            with session.begin():
                # Its attempts used up (say): an operator replays it from the DLQ.
                session.execute(
                    text("UPDATE aol_actions SET status = 'DLQ' WHERE id = :id"), {"id": action_id}
                )
                replay(session, action_id, by="test")
            outcome = Executor().run(action_id, "POST_SOCIAL")
    finally:
        for name in ("AICMO_SOCIAL_ENCRYPTION_KEYS", "AICMO_SOCIAL_TIMEOUT_SECONDS"):
            monkeypatch.delenv(name)
        monkeypatch.setenv("AICMO_PROOF_MODE", "true")
        reload_settings()
    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome.error
    assert outcome.attempt == 1  # the replay's fresh budget
    [tweet] = x_api.posts_with("Replay me")
    assert outcome.result is not None and outcome.result["external_id"] == tweet["id"]
    assert len(x_api.seen("POST", "/2/tweets")) == 1
