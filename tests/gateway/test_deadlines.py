"""Deadlines sharing one timer: they fire once their time has passed, in order,
never when cancelled, and cancel exactly the task that set them."""

from __future__ import annotations

import asyncio
import functools

import pytest

from gateway.deadlines import Deadlines, cancel_task_at


async def test_fires_after_its_time_and_not_before() -> None:
    deadlines = Deadlines(0.2, tick=0.01)
    fired: list[float] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadlines.add(lambda: fired.append(loop.time()))
    await asyncio.sleep(0.1)
    assert fired == []
    await asyncio.sleep(0.2)
    assert len(fired) == 1
    assert 0.2 <= fired[0] - started < 0.3
    assert len(deadlines) == 0


async def test_cancelled_deadlines_never_fire_and_the_rest_fire_in_time_order() -> None:
    deadlines = Deadlines(0.2, tick=0.005)
    fired: list[int] = []
    entries = []
    for i in range(10):
        entries.append(deadlines.add(functools.partial(fired.append, i)))
        await asyncio.sleep(0.012)  # more than two ticks apart: distinct time slots
    assert fired == []
    for i in (3, 4, 9):
        entries[i].cancel()
    await asyncio.sleep(0.25)
    assert fired == [0, 1, 2, 5, 6, 7, 8]
    assert [e.fired for e in entries] == [i in fired for i in range(10)]
    assert len(deadlines) == 0


async def test_a_cancelled_deadline_is_not_kept() -> None:
    deadlines = Deadlines(30.0)
    entries = [deadlines.add(lambda: None) for _ in range(1000)]
    assert len(deadlines) == 1000
    for entry in entries:
        entry.cancel()
    # Nothing is held for 30 s on behalf of requests that have finished.
    assert len(deadlines) == 0


async def test_deadlines_set_later_still_fire_after_an_idle_period() -> None:
    deadlines = Deadlines(0.03, tick=0.005)
    fired: list[str] = []
    deadlines.add(lambda: fired.append("first"))
    await asyncio.sleep(0.1)
    deadlines.add(lambda: fired.append("second"))
    await asyncio.sleep(0.1)
    assert fired == ["first", "second"]


async def test_cancel_task_at_cancels_the_waiting_task_and_says_so() -> None:
    deadlines = Deadlines(0.05, tick=0.005)

    async def wait_forever() -> bool:
        deadline = cancel_task_at(deadlines)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not deadline.caused():
                raise
            await asyncio.sleep(0)  # the cancellation was withdrawn: the task goes on
            return True
        return False

    assert await asyncio.wait_for(wait_forever(), 2) is True


async def test_a_cancellation_from_elsewhere_is_not_the_deadlines() -> None:
    deadlines = Deadlines(30.0)

    async def wait_forever() -> None:
        deadline = cancel_task_at(deadlines)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert not deadline.caused()
            raise

    task = asyncio.create_task(wait_forever())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_deadline_leaves_the_task_alone() -> None:
    deadlines = Deadlines(0.02, tick=0.005)
    deadline = cancel_task_at(deadlines)
    deadline.cancel()
    await asyncio.sleep(0.08)  # would raise CancelledError if the deadline fired
    assert not deadline.fired


def test_a_new_event_loop_starts_afresh() -> None:
    deadlines = Deadlines(0.02, tick=0.005)
    fired: list[int] = []

    async def run(i: int, wait: float) -> None:
        deadlines.add(lambda: fired.append(i))
        await asyncio.sleep(wait)

    asyncio.run(run(1, 0.0))  # this loop ends before its deadline is due
    asyncio.run(run(2, 0.08))
    assert fired == [2]


@pytest.mark.parametrize(("seconds", "tick"), [(10.0, 0.05), (0.2, 0.02)])
def test_tick_is_finer_for_short_timeouts(seconds: float, tick: float) -> None:
    assert Deadlines(seconds).tick == pytest.approx(tick)
