"""Retrying a sink: exponential backoff with full jitter, under a retry budget.

Backoff after the ``n``-th failed attempt is uniform in
``[0, min(max_ms, initial_ms * multiplier**(n-1))]`` ("full jitter"), which spreads the
retries of many events failing at once instead of synchronising them.

The budget is a token bucket per sink: every first attempt deposits ``budget_ratio``
tokens, time deposits ``budget_min_per_second``, a retry takes one. The bucket holds
at most ten seconds' worth of the minimum rate plus what 100 first attempts deposit,
so a long outage cannot save up a retry storm. A retry without a token waits for one;
it is not dead-lettered for lack of budget (only ``max_attempts`` does that).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from consumers.circuit import Circuit, CircuitState
from consumers.config import RetryConfig


class Backoff:
    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()

    def ceiling(self, failures: int) -> float:
        """Upper bound of the delay (seconds) after ``failures`` failed attempts."""
        c = self._config
        exponent = max(0, failures - 1)
        # Cap the exponent before computing: multiplier**1000 would overflow a float.
        raw = c.initial_ms * c.multiplier ** min(exponent, 64)
        return min(float(c.max_ms), raw) / 1000.0

    def delay(self, failures: int) -> float:
        return self._rng.uniform(0.0, self.ceiling(failures))


class RetryBudget:
    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._rate = min_per_second
        self._clock = clock
        self.capacity = max(1.0, 10.0 * min_per_second + 100.0 * ratio)
        self._tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def deposit(self) -> None:
        """A first attempt was made."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + self._ratio)

    def try_withdraw(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def withdraw(self) -> None:
        """Take one token, waiting as long as needed for it."""
        # Tokens accrue with time, not on an event, so sleeping until the next is due is right.
        while not self.try_withdraw():  # noqa: ASYNC110
            await asyncio.sleep(max(0.001, (1.0 - self._tokens) / self._rate))


class SinkRetry:
    """The retry state of one sink: backoff, budget and circuit breaker."""

    def __init__(
        self,
        config: RetryConfig,
        rng: random.Random | None = None,
        *,
        on_circuit_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.config = config
        self.backoff = Backoff(config, rng)
        self.budget = RetryBudget(config.budget_ratio, config.budget_min_per_second)
        self.circuit = Circuit(
            config.circuit_failures,
            config.circuit_open_ms / 1000.0,
            config.circuit_max_open_ms / 1000.0,
            on_change=on_circuit_change,
        )

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.config.max_attempts

    async def pause_before_retry(self, failures: int) -> None:
        await asyncio.sleep(self.backoff.delay(failures))
        await self.budget.withdraw()
