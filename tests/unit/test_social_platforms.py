"""Pure parts of the social gateways: length rules, rate-limit resets, record keys, vault."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from aicmo.gateways.bluesky import link_facets, tid_for
from aicmo.gateways.errors import parse_reset, retry_after_from_headers
from aicmo.gateways.linkedin import little_text
from aicmo.gateways.platforms import graphemes, length_problem, weighted
from aicmo.gateways.vault import NoEncryptionKey, UndecryptableCredentials, Vault, new_key
from aicmo.orchestration.adapters.social_adapter import PostSocialPayload

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def test_bluesky_counts_graphemes_not_code_points() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji of five code points
    assert graphemes(family) == 1
    assert graphemes("e\u0301") == 1  # e + combining acute
    assert length_problem("bluesky", family * 300) is None
    assert length_problem("bluesky", "a" * 301) == "301 graphemes, over bluesky's limit of 300"


def test_x_weighs_cjk_double_and_urls_as_23() -> None:
    assert weighted("hello") == 5
    assert weighted("日本") == 4
    assert weighted("see https://example.com/a/very/long/path/indeed") == 4 + 23
    assert length_problem("x", "日" * 140) is None
    assert length_problem("twitter", "日" * 141) == "282 weighted characters, over x's limit of 280"


def test_each_platform_has_its_limit() -> None:
    assert length_problem("mastodon", "m" * 500) is None
    assert length_problem("mastodon", "m" * 501) is not None
    assert length_problem("linkedin", "l" * 3000) is None
    assert length_problem("linkedin", "l" * 3001) is not None
    assert length_problem("tiktok", "t" * 100_000) is None  # not native: the webhook decides


def test_post_social_payload_refuses_content_too_long_for_its_platform() -> None:
    PostSocialPayload.model_validate({"social_platform": "x", "content": "a" * 280})
    with pytest.raises(ValidationError, match="content is too long for x: 281 weighted"):
        PostSocialPayload.model_validate({"social_platform": "X", "content": "a" * 281})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (str(int(NOW.timestamp()) + 90), 90.0),  # X, Bluesky: epoch seconds
        (str(int(NOW.timestamp() * 1000) + 30_000), 30.0),  # epoch milliseconds
        ((NOW + timedelta(minutes=5)).isoformat().replace("+00:00", "Z"), 300.0),  # Mastodon
        ("45", 45.0),  # a delay
        (str(int(NOW.timestamp()) - 10), 0.0),  # already past
        ("soon", None),
        ("", None),
    ],
)
def test_reset_headers_in_every_platforms_format(value: str, seconds: float | None) -> None:
    assert parse_reset(value, NOW) == seconds


def test_retry_after_wins_over_a_reset_header() -> None:
    headers = {"Retry-After": "7", "x-rate-limit-reset": str(int(NOW.timestamp()) + 900)}
    assert retry_after_from_headers(headers, NOW) == 7.0
    assert retry_after_from_headers({"X-RateLimit-Reset": "12"}, NOW) == 12.0
    assert retry_after_from_headers({}, NOW) is None


def test_record_keys_are_valid_tids_stable_per_action() -> None:
    created = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    key = tid_for("cam_publish:1", created)
    assert TID.match(key)
    assert tid_for("cam_publish:1", created) == key
    assert tid_for("cam_publish:2", created) != key
    assert TID.match(tid_for("no-time", None))


def test_vault_rotation_and_refusals() -> None:
    old, new = new_key(), new_key()
    token = Vault([old]).encrypt({"access_token": "tok-vault-1"})
    both = Vault([new, old])
    assert both.decrypt(token) == {"access_token": "tok-vault-1"}
    assert Vault([new]).decrypt(both.rotate(token)) == {"access_token": "tok-vault-1"}
    with pytest.raises(UndecryptableCredentials):
        Vault([new]).decrypt(token)
    with pytest.raises(NoEncryptionKey, match="not a Fernet key") as caught:
        Vault(["not-a-key-but-a-secret"])
    assert "not-a-key-but-a-secret" not in str(caught.value)
    with pytest.raises(NoEncryptionKey, match="AICMO_SOCIAL_ENCRYPTION_KEYS"):
        Vault([])


def test_linkedin_commentary_escapes_its_reserved_characters() -> None:
    assert little_text("Hi (all) @acme #launch 50% *off* [now]") == (
        r"Hi \(all\) \@acme {hashtag|\#|launch} 50% \*off\* \[now\]"
    )


def test_bluesky_links_are_facets_at_utf8_byte_offsets() -> None:
    text = "Café news: https://example.com/launch."
    [facet] = link_facets(text)
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    assert text.encode()[start:end] == b"https://example.com/launch"
    assert facet["features"] == [
        {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/launch"}
    ]
    assert link_facets("no links here") == []
