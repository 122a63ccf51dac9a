"""The per-sink circuit breaker: opens on failures in a row, probes once, closes on an
answer, backs off while the probe keeps failing."""

from __future__ import annotations

import asyncio

from consumers.circuit import Circuit, CircuitState

OPEN_S = 0.05


def state(c: Circuit) -> CircuitState:
    # Read through a call: mypy would keep the narrowed type of `c.state` across calls.
    return c.state


def circuit(changes: list[CircuitState] | None = None) -> Circuit:
    return Circuit(3, OPEN_S, 0.2, on_change=None if changes is None else changes.append)


async def test_closed_admits_at_once_and_opens_after_failures_in_a_row() -> None:
    changes: list[CircuitState] = []
    c = circuit(changes)
    assert await c.admit() is False
    c.failure()
    c.failure()
    c.answered()  # an answer in between: not "in a row"
    c.failure()
    c.failure()
    assert state(c) is CircuitState.CLOSED
    c.failure()
    assert state(c) is CircuitState.OPEN
    assert changes == [CircuitState.OPEN]


async def test_open_holds_everyone_then_lets_exactly_one_probe_through() -> None:
    c = circuit()
    for _ in range(3):
        c.failure()
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiters = [asyncio.create_task(c.admit()) for _ in range(5)]
    await asyncio.sleep(OPEN_S / 2)
    assert not any(w.done() for w in waiters)
    done, pending = await asyncio.wait(waiters, timeout=1, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result() for t in done] == [True]  # the probe
    assert loop.time() - started >= OPEN_S * 0.9
    assert state(c) is CircuitState.HALF_OPEN
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in pending)  # the others wait for the probe's outcome
    c.answered()
    results = await asyncio.gather(*pending)
    assert results == [False] * 4
    assert state(c) is CircuitState.CLOSED


async def test_a_failed_probe_reopens_for_longer_up_to_the_maximum() -> None:
    c = circuit()
    for _ in range(3):
        c.failure()
    loop = asyncio.get_running_loop()
    periods = []
    for _ in range(4):
        started = loop.time()
        assert await c.admit() is True
        periods.append(loop.time() - started)
        c.failure()
    # 0.05, 0.1, 0.2, 0.2 (the maximum)
    assert periods[1] > periods[0] * 1.5
    assert periods[2] > periods[1] * 1.5
    assert 0.15 < periods[3] < 0.35


async def test_an_abandoned_probe_hands_over_to_the_next_caller() -> None:
    c = circuit()
    for _ in range(3):
        c.failure()
    assert await c.admit() is True
    other = asyncio.create_task(c.admit())
    await asyncio.sleep(0.01)
    assert not other.done()
    c.abandon_probe()
    assert await asyncio.wait_for(other, 1) is True


async def test_answered_since_tells_an_outage_from_an_event_at_fault() -> None:
    c = circuit()
    began = c.now()
    c.failure()
    assert not c.answered_since(began)
    c.answered()
    assert c.answered_since(began)
