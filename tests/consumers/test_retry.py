from __future__ import annotations

import random

import pytest

from consumers.config import RetryConfig
from consumers.retry import Backoff, RetryBudget


def test_backoff_ceiling_grows_exponentially_and_caps() -> None:
    b = Backoff(RetryConfig(initial_ms=100, max_ms=1000, multiplier=3))
    assert [b.ceiling(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.3, 0.9, 1.0, 1.0]
    assert b.ceiling(10_000) == 1.0  # no overflow


def test_full_jitter_spreads_over_zero_to_ceiling() -> None:
    b = Backoff(RetryConfig(initial_ms=100, max_ms=100_000), rng=random.Random(1))
    delays = [b.delay(4) for _ in range(2000)]
    assert all(0.0 <= d <= 0.8 for d in delays)
    assert min(delays) < 0.08  # the whole range is used
    assert max(delays) > 0.72
    assert 0.35 < sum(delays) / len(delays) < 0.45  # mean of U(0, 0.8) is 0.4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_limits_retries_to_ratio_plus_minimum_rate() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.25, min_per_second=1.0, clock=clock)
    drained = 0
    while budget.try_withdraw():
        drained += 1
    assert drained == int(budget.capacity)  # the bucket starts full, and no fuller
    for _ in range(20):
        budget.deposit()  # 20 first attempts allow 5 retries
    assert sum(budget.try_withdraw() for _ in range(10)) == 5
    clock.now += 3.0  # plus one per second
    assert sum(budget.try_withdraw() for _ in range(10)) == 3


async def test_withdraw_waits_for_a_token() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=200.0)
    while budget.try_withdraw():
        pass
    await budget.withdraw()  # refills at 200/s: returns within milliseconds
    assert budget.tokens < 1.0


def test_config_rejects_max_below_initial() -> None:
    from webhook_common.config import validate
    from webhook_common.errors import ConfigError

    with pytest.raises(ConfigError, match="max_ms to be at least initial_ms"):
        validate(RetryConfig, {"initial_ms": 500, "max_ms": 100})
