"""A circuit breaker per sink: a sink that fails for everything is paused and probed,
so an outage holds events in Kafka instead of spending their attempts.

Closed: every delivery goes ahead. ``failures`` retriable failures in a row, from any
events, open it. Open: deliveries wait, spending no attempts, until the open period
ends; then exactly one delivery goes ahead as the probe (half-open). The probe's
success, or any answer from the sink (a permanent error is an answer too: the sink is
up), closes the circuit and releases every waiting delivery; its failure opens it again
for twice as long, up to ``max_open``.

The breaker also decides what an exhausted event means: an event whose attempts ran
out is the event's own fault only if the sink answered something since the event began
failing. If it did not, nothing tells the event from an outage, so the caller keeps it
(and trips the breaker) instead of dead-lettering it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    """The ``state`` label of the circuit metrics."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Circuit:
    def __init__(
        self,
        failures: int,
        open_seconds: float,
        max_open_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self._threshold = failures
        self._open_seconds = open_seconds
        self._max_open = max_open_seconds
        self._clock = clock
        self._on_change = on_change
        self.state = CircuitState.CLOSED
        self._consecutive = 0
        self._opened_in_a_row = 0
        self._open_until = 0.0
        self._probing = False
        self.last_answer = -math.inf
        # Replaced at every state change: everyone waiting wakes and looks again.
        self._changed = asyncio.Event()

    def now(self) -> float:
        return self._clock()

    async def admit(self) -> bool:
        """Wait until a delivery may be attempted. True: this caller is the probe and
        must report its outcome (or :meth:`abandon_probe`)."""
        while True:
            if self.state is CircuitState.CLOSED:
                return False
            now = self._clock()
            timeout: float | None = None
            if self.state is CircuitState.OPEN:
                if now >= self._open_until:
                    self._probing = True
                    self._set(CircuitState.HALF_OPEN)
                    return True
                timeout = self._open_until - now
            changed = self._changed
            try:
                async with asyncio.timeout(timeout):
                    await changed.wait()
            except TimeoutError:
                pass

    def answered(self) -> None:
        """The sink answered (delivered, or refused the event for good): it is up."""
        self.last_answer = self._clock()
        self._consecutive = 0
        self._opened_in_a_row = 0
        if self.state is not CircuitState.CLOSED:
            self._probing = False
            self._set(CircuitState.CLOSED)

    def failure(self) -> None:
        """A retriable failure (connection refused, timeout, 5xx, ...)."""
        self._consecutive += 1
        if self.state is CircuitState.HALF_OPEN:
            self._probing = False
            self._open()
        elif self.state is CircuitState.CLOSED and self._consecutive >= self._threshold:
            self._open()

    def trip(self) -> None:
        """Open now (an event ran out of attempts while the sink answered nothing)."""
        if self.state is CircuitState.CLOSED:
            self._open()

    def abandon_probe(self) -> None:
        """The probe ended without an outcome (cancelled): let the next caller probe."""
        if self.state is CircuitState.HALF_OPEN:
            self._probing = False
            self._open_until = self._clock()
            self._set(CircuitState.OPEN)

    def answered_since(self, moment: float) -> bool:
        return self.last_answer >= moment

    def _open(self) -> None:
        self._opened_in_a_row += 1
        period = self._open_seconds * 2 ** min(self._opened_in_a_row - 1, 32)
        self._open_until = self._clock() + min(self._max_open, period)
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        changed = state is not self.state
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()
        if changed and self._on_change is not None:
            self._on_change(state)
