"""Key-ordered, key-parallel processing of records read from Kafka, with offset tracking.

Model: Confluent's Parallel Consumer, key-ordered mode. Within a partition, records of
one key form a queue worked in offset order by one worker at a time; queues of different
keys run concurrently (at most ``max_parallel`` at once), so a slow entity or sink holds
up only its own key. Per partition the scheduler knows the offset up to which every
record is finished (:mod:`consumers.offsets`), which is what may be committed.

``run`` (:mod:`consumers.engine`) and ``replay`` (:mod:`consumers.replay`) both schedule
their records here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from consumers.offsets import PartitionOffsets
from consumers.record import TP

log = logging.getLogger(__name__)


class Job(Protocol):
    """What the scheduler needs of a record: where it was read, and its key."""

    @property
    def tp(self) -> TP: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> str: ...

    @property
    def timestamp_ms(self) -> int:
        """The record's Kafka timestamp (ms), -1 when unknown: the lag in time."""
        ...


J = TypeVar("J", bound=Job)


@dataclass(slots=True, eq=False)
class _Partition(Generic[J]):
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    # Unfinished records by key, in offset order; a key is here while it has any.
    keys: dict[str, deque[J]] = field(default_factory=dict)
    # Workers delivering a record of this partition right now (cancelled on drop).
    workers: set[asyncio.Task[None]] = field(default_factory=set)
    dropped: bool = False


class Scheduler(Generic[J]):
    """Key-ordered, key-parallel processing of records, with offset tracking.

    Keys with work wait in one FIFO (``_ready``), at most once each; up to
    ``max_parallel`` worker tasks take a key, deliver its oldest record and put the key
    back at the end of the FIFO if it has more. So a key is never delivered twice at
    once (per-key offset order), different keys overlap, and busy keys take turns. The
    workers live as long as there is work: under load there is no task, semaphore
    wait or future per record (a task per key plus its wait for a slot was one of the
    largest per-event costs in the profile).
    """

    def __init__(
        self,
        process: Callable[[J], Awaitable[None]],
        max_parallel: int,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._process = process
        self._max_parallel = max_parallel
        self._on_change = on_change
        self.partitions: dict[TP, _Partition[J]] = {}
        self._in_flight = 0
        self._ready: deque[tuple[_Partition[J], str]] = deque()
        # Workers started and not yet returned; counted by the workers themselves so
        # that one about to return is never relied on to pick up new work.
        self._running = 0
        self._workers: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def partition_in_flight(self, tp: TP) -> int:
        part = self.partitions.get(tp)
        return part.offsets.in_flight if part else 0

    def assign(self, tp: TP) -> None:
        self.partitions.setdefault(tp, _Partition())

    def submit(self, item: J) -> None:
        """Queue a record; the records of a partition come in increasing offset order."""
        tp = item.tp
        part = self.partitions.get(tp)
        if part is None:
            raise KeyError(f"partition {tp} is not assigned")
        part.offsets.add(item.offset, item.timestamp_ms)
        self._in_flight += 1
        key = item.key
        queue = part.keys.get(key)
        if queue is not None:
            queue.append(item)  # the key is queued or being delivered: in order after it
            return
        part.keys[key] = deque((item,))
        self._make_ready(part, key)

    def _make_ready(self, part: _Partition[J], key: str) -> None:
        self._ready.append((part, key))
        if self._running < self._max_parallel:
            self._spawn()

    def _spawn(self) -> None:
        self._running += 1
        task = asyncio.create_task(self._work())
        self._workers.add(task)
        task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler worker failed", exc_info=task.exception())

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        ready = self._ready
        try:
            # Checking `ready` and returning happen without an await in between, so a
            # key made ready after the check starts a new worker (``_running`` is down).
            while ready:
                part, key = ready.popleft()
                if part.dropped:
                    continue
                queue = part.keys[key]
                item = queue[0]
                part.workers.add(me)
                try:
                    try:
                        await self._process(item)
                    except asyncio.CancelledError:
                        if me.cancelling():
                            raise  # dropped, or the loop shutting down
                        # Raised by some library without anyone cancelling this worker:
                        # escaping, it would end the worker with the key's records still
                        # queued and never made ready again.
                        raise RuntimeError("CancelledError without a cancellation") from None
                except Exception:
                    # Only a bug of ours gets here (sink errors are handled below us):
                    # keep the record unfinished and try it again rather than skip it,
                    # without holding a worker meanwhile.
                    topic, partition = item.tp
                    log.exception(
                        "processing %s/%d@%d failed; retrying in 1s",
                        topic,
                        partition,
                        item.offset,
                    )
                    asyncio.get_running_loop().call_later(1.0, self._retry, part, key)
                    continue
                finally:
                    part.workers.discard(me)
                queue.popleft()
                part.offsets.finish(item.offset)
                self._in_flight -= 1
                if queue:
                    ready.append((part, key))  # its next record, after the other keys
                else:
                    del part.keys[key]
                self._signal()
        finally:
            self._running -= 1

    def _retry(self, part: _Partition[J], key: str) -> None:
        if not part.dropped and key in part.keys:
            self._make_ready(part, key)

    def _signal(self) -> None:
        self.changed.set()
        self._on_change()

    async def wait_idle(self, tps: Iterable[TP] | None = None, within: float = 0.0) -> bool:
        """Wait until the given (default: all) partitions have nothing in flight."""
        chosen = list(self.partitions) if tps is None else list(tps)
        deadline = time.monotonic() + within
        while any(self.partition_in_flight(tp) for tp in chosen):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True

    async def wait_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` records are in flight."""
        while self._in_flight >= limit:
            self.changed.clear()
            await self.changed.wait()

    async def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions: cancel their unfinished work (it is re-read by whoever
        owns the partition next, from the committed offset)."""
        tasks: list[asyncio.Task[None]] = []
        for tp in list(tps):
            part = self.partitions.pop(tp, None)
            if part is None:
                continue
            part.dropped = True  # its keys still in `_ready` are skipped
            self._in_flight -= part.offsets.in_flight
            tasks.extend(part.workers)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            # The cancelled workers may have left keys of other partitions waiting.
            for _ in range(min(len(self._ready), self._max_parallel - self._running)):
                self._spawn()
        self._signal()

    def commit_points(self, only: Iterable[TP] | None = None) -> dict[TP, int]:
        chosen = self.partitions.keys() if only is None else only
        out = {}
        for tp in chosen:
            part = self.partitions.get(tp)
            if part is not None and (point := part.offsets.to_commit()) is not None:
                out[tp] = point
        return out

    def committed(self, points: Mapping[TP, int]) -> None:
        for tp, point in points.items():
            part = self.partitions.get(tp)
            if part is not None:
                part.offsets.committed = point
