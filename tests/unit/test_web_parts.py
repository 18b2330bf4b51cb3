"""Small parts of the web service that need no server."""

from __future__ import annotations

from aicmo.ops.actions import redact_payload
from aicmo.ops.users import ROLES, Role
from aicmo.web.routes.auth import safe_next
from aicmo.web.security import SlidingWindow
from aicmo.web.views import metrics_chart


def test_payloads_are_redacted_for_pages() -> None:
    shown = redact_payload(
        {
            "to": "ada@example.com",
            "api_key": "sk-abcdefghijklmnop",
            "nested": [{"password": "hunter22"}, {"url": "https://u:pw@host/x"}],
            "token": None,
        }
    )
    assert shown["to"] == "ada@example.com"
    assert shown["api_key"] == "***"
    assert shown["nested"][0]["password"] == "***"
    assert "pw" not in shown["nested"][1]["url"]
    assert shown["token"] is None


def test_roles_include_the_ones_below() -> None:
    assert [r.value for r in ROLES] == ["viewer", "reviewer", "operator", "admin"]
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.REVIEWER)
    assert not Role.REVIEWER.allows(Role.OPERATOR) and not Role.VIEWER.allows(Role.REVIEWER)


def test_login_redirects_stay_on_this_site() -> None:
    assert safe_next("/review?campaign=1") == "/review?campaign=1"
    for hostile in ("//evil.example", "https://evil.example", "/\\evil", "", None, "javascript:x"):
        assert safe_next(hostile) == "/"


def test_sliding_window_limits_per_key() -> None:
    window = SlidingWindow(limit=3, window=60)
    assert [window.allow("a") for _ in range(4)] == [True, True, True, False]
    assert window.allow("b")


def test_metrics_chart_is_an_inline_svg_with_escaped_labels() -> None:
    row = {
        "date": "2026-12-01",
        "leads_captured": 3,
        "messages_drafted": 2,
        "messages_approved": 1,
        "messages_rejected": 0,
        "messages_published": 1,
        "messages_failed": 0,
    }
    svg = str(metrics_chart([row, {**row, "date": "<b>"}]))
    assert svg.startswith("<svg") and "polyline" in svg and "<b>" not in svg
    assert "no daily metrics" in str(metrics_chart([]))
