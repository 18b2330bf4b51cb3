"""Text generation for outreach drafts.

The campaign layer asks :func:`get_text_generator` for a generator and falls back to its
templates when it gets ``None`` (the default: no LLM configured) or when generation fails
with :class:`LLMError` (timeout, provider error, rate limit, budget). Nothing here can hang:
every call ends within ``AICMO_LLM_TIMEOUT_SECONDS``.

Inside an action, the errors also carry the AOL's classification: :class:`LLMTransientError`
is a :class:`TransientError` (RETRY, honouring ``retry_after``), :class:`LLMThrottled` a
:class:`Deferred` (RETRY, the attempt given back), :class:`LLMPermanentError` a
:class:`PermanentError` (FAILED).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aicmo.orchestration.errors import Deferred, PermanentError, TransientError

if TYPE_CHECKING:
    from aicmo.config import Settings

__all__ = [
    "LLMBadCredentials",
    "LLMBudgetExceeded",
    "LLMError",
    "LLMPermanentError",
    "LLMRateLimited",
    "LLMThrottled",
    "LLMTimeout",
    "LLMTransientError",
    "TextGenerator",
    "get_text_generator",
    "text_generator",
]


class LLMError(Exception):
    """Generation failed (timeout, provider error, rate limit, budget): use the template."""


class LLMTransientError(LLMError, TransientError):
    """Worth trying again later (network, timeout, 429, 5xx)."""


class LLMTimeout(LLMTransientError):
    """The call ran out of its time budget."""


class LLMRateLimited(LLMTransientError):
    """The shared rate limit (or the provider's 429) has no room now."""


class LLMThrottled(LLMRateLimited, Deferred):
    """Our own shared bucket had no room: the call never started, so an action gives its
    attempt back (waiting for a turn never dead-letters it)."""


class LLMPermanentError(LLMError, PermanentError):
    """Trying again cannot help (bad request, unknown model, refused content)."""


class LLMBadCredentials(LLMPermanentError):
    """The provider refused the API key."""


class LLMBudgetExceeded(LLMPermanentError):
    """Today's token or spend budget (total or this campaign's) is used up."""


class TextGenerator(Protocol):
    def generate(
        self,
        prompt: str,
        *,
        campaign_id: int | None = None,
        max_tokens: int = 400,
        idempotency_key: str | None = None,
    ) -> str:
        """Return generated text, or raise :class:`LLMError` within the configured timeout."""


def get_text_generator(settings: Settings | None = None) -> TextGenerator | None:
    """The configured generator, or None when no LLM is configured (templates are used)."""
    from aicmo.config import get_settings

    s = settings or get_settings()
    if not s.llm_base_url:
        return None
    from aicmo.llm.client import OpenAIChatClient

    return OpenAIChatClient.from_settings(s)


def text_generator(settings: Settings | None = None) -> TextGenerator:
    """Like :func:`get_text_generator`, but never None: the deterministic template provider
    stands in when no LLM is configured."""
    found = get_text_generator(settings)
    if found is not None:
        return found
    from aicmo.llm.template import TemplateTextGenerator

    return TemplateTextGenerator()
