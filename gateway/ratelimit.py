"""Per-source request rate limit: a token bucket, checked before the body is read.

Optional (``sources[i].rate_limit``). It protects Kafka and the consumers from one
misbehaving or compromised sender; a provider that gets 429 retries after
``Retry-After`` seconds, as it would after a 503.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per request."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float:
        """0 when a token was taken; else the seconds until the next one is available."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> int:
        """``Retry-After`` is whole seconds; never 0 for a refused request."""
        return max(1, math.ceil(wait))
