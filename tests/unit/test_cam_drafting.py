"""Drafting without a database: channel choice, templates, LLM fallback."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from aicmo.cam.campaigns import StepSpec
from aicmo.cam.drafting import Drafter, choose_channel
from aicmo.cam.models import Campaign, Lead
from aicmo.llm import LLMError


def campaign(channels: list[str]) -> Campaign:
    return Campaign(id=1, name="Launch", channels=channels, steps=[{}] * 3, max_steps=3)


def lead(**fields: Any) -> Lead:
    return Lead(id=9, first_name="Ada", company="Acme", **fields)


def test_the_channel_is_the_steps_or_the_first_reachable() -> None:
    both = campaign(["email", "linkedin"])
    step = StepSpec(body="x", subject="s")
    with_email = lead(email="a@x.io")
    only_linkedin = lead(linkedin_url="linkedin.com/in/ada")
    assert choose_channel(both, step, with_email) == "email"
    assert choose_channel(both, step, only_linkedin) == "linkedin"
    assert choose_channel(both, step, with_email, rotation=1) == "email"  # linkedin unreachable
    assert choose_channel(both, StepSpec(body="x", channel="linkedin"), with_email) is None
    assert choose_channel(campaign(["x_twitter"]), step, only_linkedin) == "x_twitter"


class Generator:
    def __init__(self, answer: str | Exception | float) -> None:
        self.answer = answer
        self.calls = 0

    def generate(self, prompt: str, **kwargs: Any) -> str:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        if isinstance(self.answer, float):
            time.sleep(self.answer)
            return "late"
        return self.answer


STEP = StepSpec(subject="Hi {first_name}", body="Hello {first_name} at {company|you}")


def test_templates_without_an_llm() -> None:
    draft = Drafter(campaign(["email"]), None).draft(lead(email="a@x.io"), 1, STEP, "email")
    assert (draft.subject, draft.body, draft.generated_by) == (
        "Hi Ada",
        "Hello Ada at Acme",
        "template",
    )
    social = Drafter(campaign(["linkedin"]), None).draft(lead(), 1, STEP, "linkedin")
    assert social.subject is None


@pytest.mark.parametrize(
    "answer", [LLMError("rate limited"), RuntimeError("bug"), "   ", 1.0], ids=str
)
def test_any_llm_failure_falls_back_to_the_template(answer: str | Exception | float) -> None:
    generator = Generator(answer)
    drafter = Drafter(campaign(["email"]), generator, timeout=0.1, max_failures=2)
    draft = drafter.draft(lead(email="a@x.io"), 1, STEP, "email")
    assert (draft.generated_by, draft.body) == ("template", "Hello Ada at Acme")
    assert drafter.llm_failures == 1


def test_the_llm_is_not_asked_again_after_too_many_failures() -> None:
    generator = Generator(LLMError("down"))
    drafter = Drafter(campaign(["email"]), generator, timeout=1, max_failures=2)
    for _ in range(5):
        drafter.draft(lead(email="a@x.io"), 1, STEP, "email")
    assert generator.calls == 2 and not drafter.llm_available


def test_llm_text_is_used_when_it_comes() -> None:
    drafter = Drafter(campaign(["email"]), Generator(" Dear Ada, ... "), timeout=1)
    draft = drafter.draft(lead(email="a@x.io"), 2, STEP, "email")
    assert (draft.generated_by, draft.body, draft.subject) == ("llm", "Dear Ada, ...", "Hi Ada")


class SoftTimeLimit(Exception):
    """Stands in for Celery's SoftTimeLimitExceeded, which a signal raises in the worker."""


def test_a_time_limit_while_waiting_for_the_llm_stops_the_tick_instead_of_falling_back() -> None:
    def expire(signum: int, frame: object) -> None:
        raise SoftTimeLimit()

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        drafter = Drafter(campaign(["email"]), Generator(1.0), timeout=2)
        with pytest.raises(SoftTimeLimit):
            drafter.draft(lead(email="a@x.io"), 1, STEP, "email")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
