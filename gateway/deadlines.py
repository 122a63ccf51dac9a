"""Many timeouts of one length on one timer.

Every webhook has up to three deadlines: its request head, its body and Kafka's
acknowledgement. Under uvloop each ``loop.call_at`` arms a libuv timer, about 4.5 µs
on the benchmark machine, and ``asyncio.timeout`` adds its own bookkeeping on top:
together more than verifying the signature, parsing the JSON and hashing the event id.

Here a deadline goes into the set of its time slot (``tick`` seconds wide) and one
timer, armed only while some slot is pending, fires the slots whose time has come.
Setting a deadline is a set insertion, cancelling it a set removal, so a finished
request leaves nothing behind: no queue of cancelled entries that would outlive
the request and grow the garbage collector's oldest generation. A deadline fires up
to ``tick`` seconds late, which is nothing next to timeouts measured in seconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

# How late a deadline may fire. Timeouts here are whole seconds (head, body, ack).
DEFAULT_TICK = 0.05


class Deadline:
    """One pending deadline; :meth:`cancel` it once the awaited thing happened.
    ``fired`` tells, afterwards, whether it ran its callback."""

    __slots__ = ("_slot", "callback", "fired")

    def __init__(self, callback: Callable[[], object], slot: set[Deadline]) -> None:
        self.callback = callback
        self.fired = False
        self._slot = slot

    def cancel(self) -> None:
        self._slot.discard(self)

    def caused(self) -> bool:
        """After ``CancelledError`` in the task that set it (:func:`cancel_task_at`):
        True, with the cancellation withdrawn, when this deadline cancelled it; False
        when someone else did (then re-raise)."""
        if not self.fired:
            return False
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
        return True


class Deadlines:
    """Deadlines of ``seconds`` each, on the running loop of whoever calls :meth:`add`."""

    def __init__(self, seconds: float, tick: float | None = None) -> None:
        self.seconds = seconds
        # Short timeouts (tests use fractions of a second) get a proportionally finer tick.
        self.tick = tick if tick is not None else min(DEFAULT_TICK, seconds / 10)
        # Slot number -> deadlines due by the end of that slot. All deadlines have the
        # same length, so slots are created in increasing order and the dict's
        # insertion order is their time order.
        self._slots: dict[int, set[Deadline]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def add(self, callback: Callable[[], object]) -> Deadline:
        """Call ``callback`` (on the loop) once ``seconds`` have passed, unless cancelled."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # First use, or a new loop (tests run servers on several): start afresh.
            self.close()
            self._loop = loop
        number = math.ceil((loop.time() + self.seconds) / self.tick)
        slot = self._slots.get(number)
        if slot is None:
            slot = self._slots[number] = set()
            if self._timer is None:
                self._timer = loop.call_at(number * self.tick, self._expire)
        deadline = Deadline(callback, slot)
        slot.add(deadline)
        return deadline

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        slots = self._slots
        while slots:
            number = next(iter(slots))
            if number * self.tick > now:
                self._timer = loop.call_at(number * self.tick, self._expire)
                return
            due = slots.pop(number)
            for deadline in tuple(due):
                deadline.fired = True
                # One failing callback must not strand the deadlines after it.
                try:
                    deadline.callback()
                except Exception as exc:  # pragma: no cover - callbacks here do not raise
                    loop.call_exception_handler(
                        {"message": "deadline callback failed", "exception": exc}
                    )
            due.clear()  # no slot <-> deadline reference cycles left for the collector

    def close(self) -> None:
        """Drop every pending deadline (at shutdown); none fires afterwards."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()


def cancel_task_at(deadlines: Deadlines) -> Deadline:
    """A deadline that cancels the current task; after ``CancelledError``,
    :meth:`Deadline.caused` tells whether the deadline (not someone else) did."""
    task = asyncio.current_task()
    assert task is not None
    return deadlines.add(task.cancel)
