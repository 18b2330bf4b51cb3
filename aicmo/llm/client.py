"""An OpenAI-compatible chat-completions client that cannot hang a worker or drain a budget.

One :meth:`OpenAIChatClient.generate` call, in order:

1. reserves the worst case of its attempt against the daily budgets (refused at once when
   over);
2. waits for room in the provider's global buckets (requests and tokens per minute, shared by
   every worker through :mod:`aicmo.ratelimit`), but never past its own deadline;
3. sends with a connect timeout and a hard deadline on the whole exchange;
4. settles the attempt: an answer costs its reported usage; an attempt the provider may have
   run without reporting it (timeout, dropped connection, 5xx) keeps its worst case, because
   the provider bills it anyway; one it provably never ran (connection refused, a 4xx) costs
   nothing;
5. retries transient failures (network, timeout, 429, 5xx) with exponential backoff - or the
   provider's Retry-After - while the deadline allows, each retry a new attempt from step 1.

The whole call ends within ``timeout`` seconds. A wait that does not fit raises a transient
:class:`~aicmo.llm.LLMError` whose ``retry_after`` says when to try again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from aicmo.config import Settings
from aicmo.gateways.errors import (
    BadCredentials,
    GatewayPermanentError,
    error_for_status,
)
from aicmo.gateways.http import send_with_deadline, shared_client
from aicmo.llm import (
    LLMBadCredentials,
    LLMBudgetExceeded,
    LLMError,
    LLMPermanentError,
    LLMRateLimited,
    LLMThrottled,
    LLMTimeout,
    LLMTransientError,
)
from aicmo.llm.budget import LLMBudget, Reservation, Usage
from aicmo.orchestration.redaction import redact, register_secret
from aicmo.ratelimit import Bucket, LimitStoreUnavailable, RateLimited, RateLimiter, get_store

log = logging.getLogger(__name__)

# Below this much time left, a request cannot usefully start.
MIN_CALL_SECONDS = 0.05


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate (about four bytes a token, plus message overhead)."""
    return len(text.encode("utf-8")) // 4 + 8


class OpenAIChatClient:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        system_prompt: str = "",
        temperature: float = 0.7,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        max_retries: int = 2,
        retry_base_delay: float = 1.0,
        limiter: RateLimiter | None = None,
        request_bucket: Bucket | None = None,
        token_bucket: Bucket | None = None,
        budget: LLMBudget | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        register_secret(api_key)
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.limiter = limiter
        self.request_bucket = request_bucket
        self.token_bucket = token_bucket
        self.budget = budget
        self.client = client or shared_client("llm", connect_timeout, timeout)
        self.sleep = sleep
        self.clock = clock
        self.provider = f"llm {urlsplit(base_url).hostname or base_url}"

    def __repr__(self) -> str:
        return f"OpenAIChatClient({self.provider}, model={self.model})"

    @classmethod
    def from_settings(cls, s: Settings) -> OpenAIChatClient:
        assert s.llm_base_url, "no AICMO_LLM_BASE_URL"
        key = s.llm_rate_limit_key or urlsplit(s.llm_base_url).hostname or "llm"
        store = get_store(s)
        requests = tokens = None
        if s.llm_requests_per_minute:
            requests = Bucket(
                f"llm:{key}:requests", s.llm_requests_per_minute, s.llm_burst_requests
            )
        if s.llm_tokens_per_minute:
            tokens = Bucket(f"llm:{key}:tokens", s.llm_tokens_per_minute, s.llm_tokens_per_minute)
        return cls(
            base_url=s.llm_base_url,
            model=s.llm_model,
            api_key=s.llm_api_key.get_secret_value() if s.llm_api_key else None,
            system_prompt=s.llm_system_prompt,
            temperature=s.llm_temperature,
            connect_timeout=s.llm_connect_timeout_seconds,
            timeout=s.llm_timeout_seconds,
            max_retries=s.llm_max_retries,
            retry_base_delay=s.llm_retry_base_delay_seconds,
            limiter=RateLimiter(store, s.rate_limit_max_wait_seconds),
            request_bucket=requests,
            token_bucket=tokens,
            budget=LLMBudget.from_settings(store, s),
        )

    # -- the call ----------------------------------------------------------------------------

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def generate(
        self,
        prompt: str,
        *,
        campaign_id: int | None = None,
        max_tokens: int = 400,
        idempotency_key: str | None = None,
    ) -> str:
        if max_tokens < 1:
            raise LLMPermanentError(f"max_tokens must be at least 1, got {max_tokens}")
        deadline = self.clock() + self.timeout
        messages = self._messages(prompt)
        worst_case = Usage(sum(estimate_tokens(m["content"]) for m in messages), max_tokens)
        return self._call(messages, max_tokens, idempotency_key, deadline, worst_case, campaign_id)

    def _call(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        idempotency_key: str | None,
        deadline: float,
        worst_case: Usage,
        campaign_id: int | None,
    ) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        previous: LLMError | None = None
        while True:
            attempt += 1
            reservation = self._reserve(campaign_id, worst_case, attempt, previous)
            # What this attempt costs, settled whatever happens (even a soft time limit raised
            # mid-wait): nothing until the request may have reached the provider.
            charge: Usage | None = None
            try:
                self._wait_for_room(deadline, worst_case)
                remaining = deadline - self.clock()
                if remaining < MIN_CALL_SECONDS:
                    raise LLMTimeout(f"{self.provider}: no time left within {self.timeout:g}s")
                request = self.client.build_request("POST", self.url, json=body, headers=headers)
                charge = worst_case
                answer, charge = self._attempt(request, remaining, worst_case, attempt)
            finally:
                self._settle(reservation, charge)
            if isinstance(answer, str):
                return answer
            error = answer
            if isinstance(error, LLMPermanentError) or attempt > self.max_retries:
                raise error
            assert isinstance(error, LLMTransientError)
            delay = error.retry_after
            if delay is None:
                delay = self.retry_base_delay * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
            if self.clock() + delay + MIN_CALL_SECONDS >= deadline:
                raise error  # its retry_after (if any) tells the caller when to come back
            log.info(
                "%s: attempt %s failed (%s); retrying in %.2fs",
                self.provider,
                attempt,
                error,
                delay,
            )
            previous = error
            self.sleep(delay)

    def _attempt(
        self, request: httpx.Request, remaining: float, worst_case: Usage, attempt: int
    ) -> tuple[str | LLMError, Usage | None]:
        """One exchange: the text or the error it stands for, and what the provider may bill
        for it. An answer costs its reported usage. An attempt the provider may have worked
        on without telling us the count (no answer in time, a dropped connection, a 5xx, a
        garbled 2xx) costs its worst case. One it provably did not run costs nothing: the
        connection never opened, or a 4xx refused the request before any generation."""
        try:
            response = send_with_deadline(self.client, request, remaining)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return LLMTransientError(
                redact(f"{self.provider}: network error: {type(exc).__name__}: {exc}")
            ), None
        except httpx.TimeoutException:
            return LLMTimeout(
                f"{self.provider}: no answer within the {self.timeout:g}s limit (attempt {attempt})"
            ), worst_case
        except httpx.TransportError as exc:
            return LLMTransientError(
                redact(f"{self.provider}: network error: {type(exc).__name__}: {exc}")
            ), worst_case
        outcome = self._outcome(response)
        if isinstance(outcome, tuple):
            text, used = outcome
            # No usage reported: count the prompt as estimated and the text as written.
            return text, used or Usage(worst_case.prompt_tokens, estimate_tokens(text))
        if 400 <= response.status_code < 500:
            return outcome, None
        return outcome, worst_case

    def _reserve(
        self,
        campaign_id: int | None,
        worst_case: Usage,
        attempt: int,
        previous: LLMError | None,
    ) -> Reservation | None:
        """Reserve one attempt's worst case: every attempt is paid for on its own."""
        if self.budget is None:
            return None
        try:
            return self.budget.reserve(campaign_id, worst_case)
        except LLMBudgetExceeded as exc:
            if previous is None:
                raise
            raise LLMBudgetExceeded(f"{exc} (after attempt {attempt - 1}: {previous})") from None

    def _settle(self, reservation: Reservation | None, charge: Usage | None) -> None:
        if self.budget is None or reservation is None:
            return
        try:
            self.budget.settle(reservation, charge)
        except LimitStoreUnavailable as exc:
            # The attempt is paid for either way; losing its exact count is the lesser harm.
            log.warning("LLM budget not settled: %s", exc)

    def _wait_for_room(self, deadline: float, worst_case: Usage) -> None:
        if self.limiter is None:
            return
        wants: list[tuple[Bucket, float]] = []
        if self.request_bucket is not None:
            wants.append((self.request_bucket, 1))
        if self.token_bucket is not None:
            wants.append((self.token_bucket, worst_case.total))
        budget = min(self.limiter.max_wait, max(0.0, deadline - self.clock() - MIN_CALL_SECONDS))
        try:
            self.limiter.acquire(wants, max_wait=budget)
        except RateLimited as exc:
            raise LLMThrottled(str(exc), retry_after=exc.retry_after) from None
        except LimitStoreUnavailable as exc:
            raise LLMTransientError(str(exc)) from None

    def _outcome(self, response: httpx.Response) -> tuple[str, Usage | None] | LLMError:
        """The text and usage of a good answer, or the error a bad one stands for."""
        if not response.is_success:
            gateway = error_for_status(
                self.provider,
                response.status_code,
                response.content,
                response.headers.get("Retry-After"),
            )
            if isinstance(gateway, BadCredentials):
                return LLMBadCredentials(str(gateway))
            if isinstance(gateway, GatewayPermanentError):
                return LLMPermanentError(str(gateway))
            if response.status_code == 429:
                return LLMRateLimited(str(gateway), retry_after=gateway.retry_after)
            return LLMTransientError(str(gateway), retry_after=gateway.retry_after)
        try:
            document = response.json()
            choice = document["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            # A proxy's HTML page or a truncated body: a new attempt may well get a real one.
            return LLMTransientError(f"{self.provider}: malformed response (HTTP 2xx)")
        if not isinstance(text, str) or not text.strip():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            return LLMPermanentError(f"{self.provider}: empty completion (finish_reason={reason})")
        usage = document.get("usage") or {}
        try:
            used: Usage | None = Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
        except (KeyError, TypeError, ValueError):
            used = None
        return text.strip(), used
