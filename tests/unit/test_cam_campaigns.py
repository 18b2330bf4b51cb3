"""Campaign definitions are validated before anything is written."""

from __future__ import annotations

from typing import Any

import pytest

from aicmo.cam.campaigns import CampaignSpec, parse_spec
from aicmo.cam.errors import InvalidCampaign
from aicmo.cam.templates import render

STEP = {"subject": "Hi {first_name|there}", "body": "Hello {first_name}"}


def spec(**overrides: Any) -> dict[str, Any]:
    return {"name": "Launch", "steps": [STEP], **overrides}


def test_defaults() -> None:
    checked = parse_spec(spec())
    assert isinstance(checked, CampaignSpec)
    assert (checked.tick_every_minutes, checked.tick_daily_at) == (60, None)
    assert checked.requires_approval is True
    assert (checked.max_steps, checked.channels, checked.mode) == (3, ["email"], "proof")
    assert checked.steps[0].wait_minutes == 3 * 24 * 60


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown IANA timezone"),
        ({"tick_every_minutes": 5, "tick_daily_at": "09:00"}, "not both"),
        ({"tick_every_minutes": None, "tick_daily_at": "9h"}, "HH:MM"),
        ({"channels": ["email", "EMAIL"]}, "listed twice"),
        ({"channels": ["email"], "steps": [{**STEP, "channel": "x"}]}, "not one of"),
        ({"steps": [{"body": "no subject"}]}, "needs a subject"),
        ({"steps": [{**STEP, "body": "{first_name.__class__}"}]}, "unknown placeholder"),
        ({"steps": [{**STEP, "body": "{password}"}]}, r"unknown placeholder\(s\) \{password\}"),
        ({"steps": []}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"surprise": 1}, "surprise"),
        ({"name": "  "}, "name"),
    ],
)
def test_invalid_campaigns_are_refused_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidCampaign, match=message):
        parse_spec(spec(**overrides))


def test_a_social_only_step_needs_no_subject() -> None:
    checked = parse_spec(spec(channels=["linkedin"], steps=[{"body": "Hi"}]))
    assert checked.steps[0].subject == ""


def test_templates_fill_placeholders_and_nothing_else() -> None:
    fields = {"first_name": "Ada", "company": None}
    assert render("Hi {first_name}, {company|your team}!", fields) == "Hi Ada, your team!"
    assert render("{company}.", fields) == "."
    assert render("{first_name.__class__} {{x}}", fields) == "{first_name.__class__} {{x}}"
