"""Many timeouts of one length on one timer.

Every webhook has up to three deadlines: its request head, its body and Kafka's
acknowledgement. Under uvloop each ``loop.call_at`` arms a libuv timer, about 4.5 µs
on the benchmark machine, and ``asyncio.timeout`` adds its own bookkeeping on top:
together more than verifying the signature, parsing the JSON and hashing the event id.

All deadlines of one kind have the same length, so they expire in the order they
were set: a FIFO queue holds them, and one timer, re-armed only while the queue is not
empty, fires the expired ones. Setting a deadline is a ``deque.append``, cancelling it
sets a flag. A deadline fires up to ``tick`` seconds late, which is nothing next to
timeouts measured in seconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

# How late a deadline may fire. Timeouts here are whole seconds (head, body, ack).
DEFAULT_TICK = 0.05


def _nothing() -> None:
    return None


class Deadline:
    """One pending deadline; :meth:`cancel` it once the awaited thing happened."""

    __slots__ = ("callback", "cancelled", "fired", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True
        # The queue keeps this object until its time comes; do not keep what the
        # callback refers to (a finished request's task) alive that long.
        self.callback = _nothing


class Deadlines:
    """Deadlines of ``seconds`` each, on the running loop of whoever calls :meth:`add`."""

    def __init__(self, seconds: float, tick: float | None = None) -> None:
        self.seconds = seconds
        # Short timeouts (tests use fractions of a second) get a proportionally finer tick.
        self.tick = tick if tick is not None else min(DEFAULT_TICK, seconds / 10)
        self._queue: deque[Deadline] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, callback: Callable[[], object]) -> Deadline:
        """Call ``callback`` (on the loop) once ``seconds`` have passed, unless cancelled."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # First use, or a new loop (tests run servers on several): start afresh.
            self.close()
            self._loop = loop
        deadline = Deadline(loop.time() + self.seconds, callback)
        self._queue.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline.when + self.tick, self._expire)
        return deadline

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        loop = self._loop
        assert loop is not None
        now = loop.time()
        while queue:
            head = queue[0]
            if head.cancelled:
                queue.popleft()
                continue
            if head.when > now:
                break
            queue.popleft()
            head.fired = True
            # One failing callback must not strand the deadlines behind it.
            try:
                head.callback()
            except Exception as exc:  # pragma: no cover - callbacks here do not raise
                loop.call_exception_handler(
                    {"message": "deadline callback failed", "exception": exc}
                )
        if queue:
            self._timer = loop.call_at(max(queue[0].when, now) + self.tick, self._expire)

    def close(self) -> None:
        """Drop every pending deadline (at shutdown); none fires afterwards."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for deadline in self._queue:
            deadline.cancelled = True
        self._queue.clear()


def cancel_task_at(deadlines: Deadlines) -> Deadline:
    """A deadline that cancels the current task; after ``CancelledError``, its
    ``fired`` says whether the deadline (not someone else) cancelled it."""
    task = asyncio.current_task()
    assert task is not None
    return deadlines.add(task.cancel)
