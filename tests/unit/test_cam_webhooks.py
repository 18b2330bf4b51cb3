"""Webhook signatures (HMAC-SHA256, constant-time compare, replay window) and bodies."""

from __future__ import annotations

import pytest

from aicmo.cam.webhooks import BadPayload, BadSignature, parse_event, sign, verify_signature

BODY = b'{"event_id": "e1", "campaign_id": 3, "leads": [{"email": "a@b.io"}]}'
NOW = 1_800_000_000


def test_a_good_signature_passes() -> None:
    verify_signature("k", BODY, sign("k", BODY, NOW), NOW + 10, 300)


def test_a_rotated_secret_may_send_several_signatures() -> None:
    header = sign("old", BODY, NOW) + "," + sign("k", BODY, NOW).split(",")[1]
    verify_signature("k", BODY, header, NOW, 300)


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (None, BODY, NOW, "missing"),
        ("v1=abc", BODY, NOW, "malformed"),
        ("t=x,v1=abc", BODY, NOW, "malformed signature timestamp"),
        (sign("other", BODY, NOW), BODY, NOW, "does not match"),
        (sign("k", BODY, NOW), BODY + b"\n", NOW, "does not match"),
        (sign("k", BODY, NOW), BODY, NOW + 301, "replay"),
        (sign("k", BODY, NOW), BODY, NOW - 301, "replay"),
    ],
)
def test_bad_signatures_are_refused(
    header: str | None, body: bytes, now: int, message: str
) -> None:
    with pytest.raises(BadSignature, match=message):
        verify_signature("k", body, header, now, 300)


def test_bodies_are_validated() -> None:
    assert parse_event(BODY).event_id == "e1"
    for body, message in [
        (b"\xff", "not UTF-8 JSON"),
        (b"[1]", "invalid event"),
        (b'{"event_id": "a b", "campaign_id": 1, "leads": [{}]}', "event_id"),
        (b'{"event_id": "a", "campaign_id": 1, "leads": []}', "leads"),
    ]:
        with pytest.raises(BadPayload, match=message):
            parse_event(body)
