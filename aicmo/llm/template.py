"""The deterministic template provider: no network, no cost, the same text for the same
prompt. It is the stand-in when no LLM is configured, and what tests and demos compare with."""

from __future__ import annotations

import hashlib

OPENINGS = (
    "Hi there,",
    "Hello,",
    "Good day,",
)
CLOSINGS = (
    "Would a short call next week be useful?",
    "Happy to share more if it helps.",
    "Let me know if this is worth a conversation.",
)


class TemplateTextGenerator:
    name = "template"

    def generate(
        self,
        prompt: str,
        *,
        campaign_id: int | None = None,
        max_tokens: int = 400,
        idempotency_key: str | None = None,
    ) -> str:
        # The choice depends on the prompt only, so a retried draft comes out identical.
        digest = hashlib.sha256(prompt.encode("utf-8")).digest()
        topic = " ".join(prompt.split())
        text = f"{OPENINGS[digest[0] % len(OPENINGS)]}\n\n{topic}\n\n"
        text += CLOSINGS[digest[1] % len(CLOSINGS)]
        # About four characters a token: keep the template within the caller's budget.
        return text[: max(1, max_tokens) * 4]
