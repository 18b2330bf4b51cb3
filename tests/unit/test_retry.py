import random

import pytest

from aicmo.orchestration.retry import RetryPolicy


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=2, factor=2, max_delay=30, jitter=0)
    assert [policy.delay_for(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_jitter_spreads_delays_within_bounds() -> None:
    policy = RetryPolicy(base_delay=10, factor=1, max_delay=100, jitter=0.2)
    rng = random.Random(7)
    delays = [policy.delay_for(1, rng) for _ in range(500)]
    assert min(delays) >= 8 and max(delays) <= 12
    assert len({round(d, 3) for d in delays}) > 100  # really spread, not one value


def test_jitter_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(base_delay=100, factor=2, max_delay=100, jitter=0.5)
    assert all(policy.delay_for(5) <= 100 for _ in range(200))


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"factor": 0.5}, {"jitter": 1.5}, {"base_delay": -1}]
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
