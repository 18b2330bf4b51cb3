"""Drafting one step's message for one lead: the LLM when configured, else the template.

The LLM gets a hard timeout here as well as its own: a tick must never hang on a provider.
Any failure (``LLMError``, timeout, empty text, anything else) falls back to the step's
template, and after a few failures the rest of the tick stops asking.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from aicmo.cam.campaigns import EMAIL, StepSpec
from aicmo.cam.leads import clean_text
from aicmo.cam.models import Campaign, Lead
from aicmo.cam.templates import render
from aicmo.config import get_settings
from aicmo.llm import TextGenerator

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 10_000


@dataclass(frozen=True)
class Draft:
    channel: str
    subject: str | None
    body: str
    generated_by: str  # "llm" or "template"


def lead_fields(lead: Lead, campaign: Campaign) -> dict[str, str | None]:
    full = " ".join(part for part in (lead.first_name, lead.last_name) if part) or None
    return {
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "full_name": full,
        "company": lead.company,
        "title": lead.title,
        "email": lead.email,
        "campaign": campaign.name,
    }


def reachable(channel: str, lead: Lead) -> bool:
    if channel == EMAIL:
        return bool(lead.email)
    if channel == "linkedin":
        return bool(lead.linkedin_url)
    # Other platforms post publicly with the lead as audience: nothing lead-specific needed.
    return True


def choose_channel(campaign: Campaign, step: StepSpec, lead: Lead, rotation: int = 0) -> str | None:
    """The step's channel, or the first of the campaign's channels (starting at ``rotation``)
    the lead can be reached on; None when there is none."""
    candidates = [step.channel] if step.channel else list(campaign.channels)
    if rotation and len(candidates) > 1:
        offset = rotation % len(candidates)
        candidates = candidates[offset:] + candidates[:offset]
    for channel in candidates:
        if reachable(channel, lead):
            return channel
    return None


def build_prompt(campaign: Campaign, step: StepSpec, number: int, channel: str, body: str) -> str:
    lines = [
        f"Campaign: {campaign.name}",
        f"Channel: {channel}",
        f"Step {number} of {campaign.step_count} of an outreach sequence.",
    ]
    if step.prompt:
        lines.append(f"Guidance: {step.prompt}")
    lines += [
        "Rewrite this draft for its recipient. Keep it short and specific; return only the "
        "message body.",
        "",
        body,
    ]
    return "\n".join(lines)


class _Call:
    """One generate() call in a daemon thread, so a hung provider cannot hang the tick."""

    def __init__(self, generator: TextGenerator, prompt: str, kwargs: dict[str, Any]) -> None:
        self.result: str | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(generator, prompt, kwargs), daemon=True, name="cam-llm"
        )

    def _run(self, generator: TextGenerator, prompt: str, kwargs: dict[str, Any]) -> None:
        try:
            self.result = generator.generate(prompt, **kwargs)
        except BaseException as exc:  # reported to the caller, who falls back
            self.error = exc

    def wait(self, timeout: float) -> str | BaseException:
        """The text, or the reason there is none. Returned, not raised: an exception raised
        while waiting (Celery's soft time limit arrives as a signal here) is not the LLM's
        failure and must stop the tick, not fall back to a template."""
        self._thread.start()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return TimeoutError(f"no answer within {timeout:g}s")
        if self.error is not None:
            return self.error
        return (self.result or "").strip() or ValueError("empty text")


class Drafter:
    """Drafts the messages of one tick; counts LLM use and fallbacks."""

    def __init__(
        self,
        campaign: Campaign,
        generator: TextGenerator | None,
        timeout: float | None = None,
        max_failures: int | None = None,
    ) -> None:
        settings = get_settings()
        self.campaign = campaign
        self.generator = generator
        self.timeout = timeout or settings.cam_draft_timeout_seconds
        self.max_failures = max_failures or settings.cam_draft_max_llm_failures
        self.llm_drafts = 0
        self.llm_failures = 0

    @property
    def llm_available(self) -> bool:
        return self.generator is not None and self.llm_failures < self.max_failures

    def draft(self, lead: Lead, number: int, step: StepSpec, channel: str) -> Draft:
        fields = lead_fields(lead, self.campaign)
        body = render(step.body, fields)
        # A lead stored before capture cleaned names could still put a line break here.
        subject = clean_text(render(step.subject, fields)) or None
        if channel == EMAIL and not subject:
            subject = self.campaign.name
        if channel != EMAIL:
            subject = None
        generated = self._generate(lead, number, step, channel, body)
        if generated is not None:
            return Draft(channel, subject, generated, "llm")
        return Draft(channel, subject, body[:MAX_BODY_CHARS], "template")

    def _generate(
        self, lead: Lead, number: int, step: StepSpec, channel: str, body: str
    ) -> str | None:
        if not self.llm_available:
            return None
        assert self.generator is not None
        prompt = build_prompt(self.campaign, step, number, channel, body)
        call = _Call(
            self.generator,
            prompt,
            {
                "campaign_id": self.campaign.id,
                "max_tokens": 400,
                "idempotency_key": f"cam_draft:{lead.id}:{number}",
            },
        )
        text = call.wait(self.timeout)
        if isinstance(text, BaseException):
            self.llm_failures += 1
            log.warning(
                "campaign %s lead %s step %s: LLM draft failed, using the template: %r",
                self.campaign.id,
                lead.id,
                number,
                text,
                extra={"campaign_id": self.campaign.id, "lead_id": lead.id},
            )
            return None
        self.llm_drafts += 1
        return text[:MAX_BODY_CHARS]
