"""Retry strategy as a small value object: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from aicmo.config import Settings, get_settings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 600.0
    jitter: float = 0.2  # +/- this fraction of the delay, so retries of a burst spread out

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("delays must be >= 0 and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetryPolicy:
        s = settings or get_settings()
        return cls(
            max_attempts=s.retry_max_attempts,
            base_delay=s.retry_base_delay_seconds,
            max_delay=s.retry_max_delay_seconds,
            jitter=s.retry_jitter,
        )

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th attempt (1-based) failed."""
        raw = min(self.max_delay, self.base_delay * self.factor ** max(0, attempt - 1))
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            raw *= 1 + spread
        return max(0.0, min(raw, self.max_delay))
