"""Daily LLM budgets, in tokens and in spend, in total and per campaign.

Each attempt of a call reserves its worst case (prompt estimate + ``max_tokens``) before it is
sent, atomically across every worker (see :meth:`CounterStore.reserve`), and settles afterwards:
to the provider's reported usage when it answered, to nothing when it provably never ran the
request, and otherwise (a timeout, a 5xx: the provider may have billed it) the worst case stays
charged. So concurrent calls can never overspend together, an over-budget call is refused
before it costs anything, and a provider that keeps timing out exhausts the budget instead of
spending without end.
Days are UTC days. Counters are kept (and readable with :meth:`LLMBudget.spent`) even when no
budget is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from aicmo.config import Settings
from aicmo.llm import LLMBudgetExceeded, LLMTransientError
from aicmo.ratelimit import Counter, CounterStore, LimitStoreUnavailable

COUNTER_TTL_SECONDS = 3 * 86_400
MICRO = 1_000_000


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Reservation:
    day: str
    campaign_id: int | None
    usage: Usage  # the worst case that was reserved
    micro_usd: int


class LLMBudget:
    def __init__(
        self,
        store: CounterStore,
        *,
        daily_tokens: int | None = None,
        campaign_daily_tokens: int | None = None,
        daily_usd: float | None = None,
        campaign_daily_usd: float | None = None,
        usd_per_1k_prompt_tokens: float = 0.0,
        usd_per_1k_completion_tokens: float = 0.0,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.store = store
        self.daily_tokens = daily_tokens
        self.campaign_daily_tokens = campaign_daily_tokens
        self.daily_micro_usd = None if daily_usd is None else round(daily_usd * MICRO)
        self.campaign_daily_micro_usd = (
            None if campaign_daily_usd is None else round(campaign_daily_usd * MICRO)
        )
        self.prompt_price = usd_per_1k_prompt_tokens
        self.completion_price = usd_per_1k_completion_tokens
        self.today = today

    @classmethod
    def from_settings(cls, store: CounterStore, s: Settings) -> LLMBudget:
        return cls(
            store,
            daily_tokens=s.llm_daily_token_budget,
            campaign_daily_tokens=s.llm_campaign_daily_token_budget,
            daily_usd=s.llm_daily_budget_usd,
            campaign_daily_usd=s.llm_campaign_daily_budget_usd,
            usd_per_1k_prompt_tokens=s.llm_usd_per_1k_prompt_tokens,
            usd_per_1k_completion_tokens=s.llm_usd_per_1k_completion_tokens,
        )

    def cost_micro_usd(self, usage: Usage) -> int:
        return round(
            (
                usage.prompt_tokens * self.prompt_price
                + usage.completion_tokens * self.completion_price
            )
            / 1000
            * MICRO
        )

    def _counters(
        self, day: str, campaign_id: int | None, tokens: int, micro: int
    ) -> list[Counter]:
        counters = [
            Counter(f"llm:{day}:total:tokens", self.daily_tokens, tokens),
            Counter(f"llm:{day}:total:micro_usd", self.daily_micro_usd, micro),
        ]
        if campaign_id is not None:
            counters += [
                Counter(
                    f"llm:{day}:campaign:{campaign_id}:tokens", self.campaign_daily_tokens, tokens
                ),
                Counter(
                    f"llm:{day}:campaign:{campaign_id}:micro_usd",
                    self.campaign_daily_micro_usd,
                    micro,
                ),
            ]
        return counters

    def reserve(self, campaign_id: int | None, worst_case: Usage) -> Reservation:
        day = self.today().isoformat()
        micro = self.cost_micro_usd(worst_case)
        try:
            refused = self.store.reserve(
                self._counters(day, campaign_id, worst_case.total, micro), COUNTER_TTL_SECONDS
            )
        except LimitStoreUnavailable as exc:
            raise LLMTransientError(f"LLM budget store unavailable: {exc}") from None
        if refused is not None:
            scope = "this campaign's" if ":campaign:" in refused else "the total"
            unit = "spend" if refused.endswith("micro_usd") else "token"
            raise LLMBudgetExceeded(
                f"LLM {unit} budget exceeded: {scope} daily {unit} budget for {day} has no room "
                f"for this call (worst case {worst_case.total} tokens"
                + (f", ${micro / MICRO:.4f}" if micro else "")
                + "); drafts fall back to templates"
            )
        return Reservation(day, campaign_id, worst_case, micro)

    def settle(self, reservation: Reservation, used: Usage | None) -> None:
        """Replace the reservation by what is charged (None: nothing, give it all back)."""
        actual = used or Usage(0, 0)
        tokens = actual.total - reservation.usage.total
        micro = self.cost_micro_usd(actual) - reservation.micro_usd
        if tokens or micro:
            self.store.add(
                self._counters(reservation.day, reservation.campaign_id, tokens, micro),
                COUNTER_TTL_SECONDS,
            )

    def spent(self, campaign_id: int | None = None, day: date | None = None) -> dict[str, float]:
        """Tokens and USD counted today (or on ``day``), in total or for one campaign."""
        when = (day or self.today()).isoformat()
        scope = "total" if campaign_id is None else f"campaign:{campaign_id}"
        tokens, micro = self.store.read(
            [f"llm:{when}:{scope}:tokens", f"llm:{when}:{scope}:micro_usd"]
        )
        return {"tokens": tokens, "usd": micro / MICRO}
