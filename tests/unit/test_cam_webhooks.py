"""Webhook signatures (HMAC-SHA256 over the source and the body, constant-time compare, replay
window), bodies (depth, numbers) and the sources' settings."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from aicmo.cam.webhooks import BadPayload, BadSignature, parse_event, sign, verify_signature
from aicmo.config import Settings, WebhookSource

BODY = b'{"event_id": "e1", "campaign_id": 3, "leads": [{"email": "a@b.io"}]}'
NOW = 1_800_000_000


def check(header: str | None, body: bytes = BODY, now: float = NOW, source: str = "form") -> None:
    verify_signature("k", body, header, now, 300, source=source)


def test_a_good_signature_passes() -> None:
    check(sign("k", BODY, NOW, source="form"), now=NOW + 10)


def test_a_rotated_secret_may_send_several_signatures() -> None:
    old = sign("old", BODY, NOW, source="form")
    check(old + "," + sign("k", BODY, NOW, source="form").split(",")[1])


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (None, BODY, NOW, "missing"),
        ("v2=abc", BODY, NOW, "malformed"),
        ("t=x,v2=abc", BODY, NOW, "malformed signature timestamp"),
        (sign("other", BODY, NOW, source="form"), BODY, NOW, "does not match"),
        (sign("k", BODY, NOW, source="form"), BODY + b"\n", NOW, "does not match"),
        (sign("k", BODY, NOW, source="form"), BODY, NOW + 301, "replay"),
        (sign("k", BODY, NOW, source="form"), BODY, NOW - 301, "replay"),
    ],
)
def test_bad_signatures_are_refused(
    header: str | None, body: bytes, now: int, message: str
) -> None:
    with pytest.raises(BadSignature, match=message):
        check(header, body, now)


def test_the_signature_binds_the_source() -> None:
    # Two sources that (unwisely) share a secret: a delivery signed for one is refused by the
    # other, so a captured request cannot be replayed into another source's campaigns.
    header = sign("k", BODY, NOW, source="typeform")
    check(header, source="typeform")
    with pytest.raises(BadSignature, match="does not match"):
        check(header, source="hubspot")


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW},v2=é" + "0" * 63,
        f"t={NOW},v2=\u0663\u0664",
        f"t={NOW},v2=\udcff",
        "t=\u0661\u0668\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660,v2=00",  # Arabic digits
        f"t={'9' * 5000},v2=00",
        "t=1_800_000_000,v2=00",
        "t=-1,v2=00",
        f"t={NOW},v2=00," * 2000,
        "\x00" * 10,
    ],
)
def test_odd_headers_are_refused_as_bad_signatures_never_a_type_error(header: str) -> None:
    with pytest.raises(BadSignature):
        check(header)


def test_a_signature_of_the_old_scheme_is_refused_with_a_clear_reason() -> None:
    with pytest.raises(BadSignature, match=r"v1 signatures .* no longer accepted"):
        check(f"t={NOW},v1={'0' * 64}")


def test_bodies_are_validated() -> None:
    assert parse_event(BODY).event_id == "e1"
    for body, message in [
        (b"\xff", "not UTF-8 JSON"),
        (b"[1]", "invalid event"),
        (b'{"event_id": "a b", "campaign_id": 1, "leads": [{}]}', "event_id"),
        (b'{"event_id": "a", "campaign_id": 1, "leads": []}', "leads"),
        (b'{"event_id": "a", "campaign_id": 99999999999999999999, "leads": [{}]}', "campaign_id"),
    ]:
        with pytest.raises(BadPayload, match=message):
            parse_event(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (
            b'{"event_id": "a", "campaign_id": 1, "leads": [' + b"[" * 40 + b"]" * 40 + b"]}",
            "deeper",
        ),
        (b'{"event_id": "a", "campaign_id": 1, "leads": [{"n": ' + b"9" * 5000 + b"}]}", "number"),
        (b'{"event_id": "a", "campaign_id": 1, "leads": [{"n": NaN}]}', "NaN"),
        (b'{"event_id": "a", "campaign_id": 1, "leads": [{"n": -Infinity}]}', "Infinity"),
    ],
)
def test_deep_bodies_huge_numbers_and_nan_are_bad_payloads_not_crashes(
    body: bytes, message: str
) -> None:
    with pytest.raises(BadPayload, match=message):
        parse_event(body)


@pytest.mark.parametrize(
    "body",
    [
        b'"\\' * 131_000,  # a quote and a backslash, again and again
        b'"' * 262_000,
        b"[]" * 131_000,
        b'"' + b'a\\"' * 87_000,
        b'[{"a\\\\":"[' * 20_000,
    ],
    ids=["quote-backslash", "quotes", "brackets", "escaped-quotes", "mixed"],
)
def test_hostile_bodies_are_refused_in_linear_time(body: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(BadPayload):
        parse_event(body)
    assert time.monotonic() - started < 1.0  # about 10 ms here; a quadratic scan takes minutes


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    deep_text = "[" * 1000 + "{" * 1000
    body = b'{"event_id": "e1", "campaign_id": 3, "leads": [{"note": "%s\\""}]}' % (
        deep_text.encode()
    )
    assert parse_event(body).leads[0]["note"] == deep_text + '"'


def test_webhook_sources_are_read_from_the_environment_with_their_campaigns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AICMO_CAM_WEBHOOK_SECRETS",
        '{"typeform": "s3cret", "crm": {"secret": "other", "campaigns": [3, 7]},'
        ' "any": {"secret": "x", "campaigns": "*"}}',
    )
    sources = Settings().cam_webhook_secrets
    assert sources["typeform"].campaigns == "*"  # a plain secret: every campaign
    assert sources["crm"].allows(7) and not sources["crm"].allows(4)
    assert sources["any"].allows(12345)
    assert sources["crm"].secret.get_secret_value() == "other"
    assert "other" not in repr(sources)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"typeform": ""}, "'typeform' is empty"),
        ({"typeform": "   "}, "'typeform' is empty"),
        ({"crm": {"secret": "", "campaigns": [1]}}, "'crm' is empty"),
        ({"crm": {"secret": "k", "campaigns": []}}, "campaigns"),
        ({"crm": {"secret": "k", "campaigns": [0]}}, "campaigns"),
        ({"crm": {"secret": "k", "campaigns": "some"}}, "campaigns"),
        ({"Bad Name": "k"}, "source name"),
    ],
)
def test_bad_webhook_secrets_are_refused_at_start_up(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        Settings(cam_webhook_secrets=value)
    assert "AICMO_CAM_WEBHOOK_SECRETS" in str(raised.value)


def test_a_source_set_directly_is_usable_too() -> None:
    source = WebhookSource(secret=SecretStr("k"), campaigns=[1])
    assert source.allows(1) and not source.allows(2)
