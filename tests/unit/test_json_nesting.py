"""The one nesting scan both untrusted-JSON receivers (lead webhooks, email events) use."""

from aicmo.gateways.email_events.base import MAX_JSON_DEPTH, BadEventPayload, parse_json
from aicmo.json_nesting import nesting_depth


def test_brackets_inside_strings_do_not_count() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "[[[[{{{{ \\" ]]]"}]}', limit=10) == 3


def test_the_count_stops_past_the_limit() -> None:
    assert nesting_depth(b"[" * 10_000, limit=5) == 6


def test_an_email_event_with_brackets_in_its_text_is_parsed_and_a_deep_one_refused() -> None:
    subject = "[" * (MAX_JSON_DEPTH + 10)
    assert parse_json(f'{{"subject": "{subject}"}}'.encode()) == {"subject": subject}
    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    try:
        parse_json(deep)
    except BadEventPayload as exc:
        assert "nested deeper" in str(exc)
    else:
        raise AssertionError("a body nested past the limit was parsed")
