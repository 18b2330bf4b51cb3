"""Guarantee 9 at the boundary: every bad input is refused with a message naming it."""

from datetime import UTC, datetime, timedelta

import pytest

from aicmo.config import get_settings
from aicmo.orchestration.errors import (
    InvalidIdempotencyKey,
    InvalidPayload,
    InvalidSchedule,
    PayloadTooLarge,
    UnknownActionType,
)
from aicmo.orchestration.queue import prepare
from aicmo.orchestration.status import ActionStatus

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GOOD = {"social_platform": "linkedin", "content": "Hello"}


def test_unknown_type_names_the_type_and_the_known_ones() -> None:
    with pytest.raises(UnknownActionType) as err:
        prepare("POST_SOCIALL", GOOD, None, None, NOW)
    assert "POST_SOCIALL" in str(err.value) and "POST_SOCIAL" in str(err.value)


def test_missing_field_is_named() -> None:
    with pytest.raises(InvalidPayload) as err:
        prepare("POST_SOCIAL", {"social_platform": "x"}, None, None, NOW)
    assert "content" in str(err.value) and "Field required" in str(err.value)


def test_wrong_type_and_unknown_field_are_named() -> None:
    with pytest.raises(InvalidPayload) as err:
        prepare("POST_SOCIAL", {**GOOD, "content": 5, "bogus": 1}, None, None, NOW)
    assert "content" in str(err.value) and "bogus" in str(err.value)


def test_payload_must_be_an_object() -> None:
    with pytest.raises(InvalidPayload, match="expected a JSON object"):
        prepare("POST_SOCIAL", ["not", "a", "dict"], None, None, NOW)


def test_payload_over_the_limit_is_refused_with_sizes() -> None:
    limit = get_settings().max_payload_bytes
    with pytest.raises(PayloadTooLarge) as err:
        prepare(
            "SEND_EMAIL",
            {"to": "a@b.co", "subject": "s", "body": "x" * (limit + 1)},
            None,
            None,
            NOW,
        )
    assert str(limit) in str(err.value)


def test_naive_not_before_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match="naive"):
        prepare("POST_SOCIAL", GOOD, None, datetime(2026, 11, 23, 13, 0), NOW)


def test_naive_datetime_inside_payload_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="naive datetime"):
        prepare("T_EFFECT", {"tag": datetime(2026, 1, 1)}, None, None, NOW)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("nul \x00 byte", "NUL"), ("lone \udc80 surrogate", "UTF-8")],
)
def test_text_that_cannot_be_stored_is_refused(content: str, problem: str) -> None:
    with pytest.raises(InvalidPayload, match=problem):
        prepare("POST_SOCIAL", {**GOOD, "content": content}, None, None, NOW)


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tkey", 42])
def test_bad_idempotency_keys_are_refused(key: object) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        prepare("POST_SOCIAL", GOOD, key, None, NOW)  # type: ignore[arg-type]


def test_sql_looking_text_is_just_text() -> None:
    prepared = prepare(
        "POST_SOCIAL", {**GOOD, "content": "'); DROP TABLE aol_actions;--"}, "k'; --", None, NOW
    )
    assert prepared.payload["content"].startswith("');")


def test_due_within_horizon_is_ready_with_countdown() -> None:
    prepared = prepare("POST_SOCIAL", GOOD, None, NOW + timedelta(seconds=5), NOW)
    assert prepared.status is ActionStatus.READY and prepared.countdown == pytest.approx(5)


def test_due_past_horizon_is_pending_and_unqueued() -> None:
    prepared = prepare("POST_SOCIAL", GOOD, None, NOW + timedelta(hours=2), NOW)
    assert prepared.status is ActionStatus.PENDING and prepared.queued_at is None


def test_a_past_not_before_means_now() -> None:
    prepared = prepare("POST_SOCIAL", GOOD, None, NOW - timedelta(days=1), NOW)
    assert prepared.not_before == NOW and prepared.countdown == 0


def test_payload_is_normalised_so_key_order_does_not_matter() -> None:
    a = prepare("POST_SOCIAL", {"content": "Hi", "social_platform": "X"}, "k", None, NOW)
    b = prepare("POST_SOCIAL", {"social_platform": "x ", "content": "Hi"}, "k", None, NOW)
    assert a.payload_text == b.payload_text
