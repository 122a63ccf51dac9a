"""The scheduler without Kafka: per-key order, cross-key parallelism, offsets, revocation."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from consumers.record import WorkItem, make_item
from consumers.scheduler import Scheduler
from tests.consumers.fakes import FakeSink, record


def _sending_to(sink: FakeSink) -> Callable[[WorkItem], Awaitable[None]]:
    """Processing that sends each event to ``sink``."""

    async def process(item: WorkItem) -> None:
        assert item.event is not None
        await sink.send(item.event)

    return process


async def test_same_key_in_offset_order_and_keys_in_parallel() -> None:
    sink = FakeSink("slow", delay=0.01)
    scheduler: Scheduler[WorkItem] = Scheduler(_sending_to(sink), 50)
    scheduler.assign(("raw", 0))
    rng = random.Random(7)
    keys = [f"k{rng.randrange(20)}" for _ in range(200)]
    for offset, key in enumerate(keys):
        scheduler.submit(make_item(record(offset, key)))
    assert await scheduler.wait_idle(within=30)

    per_key: dict[str, list[int]] = defaultdict(list)
    for ev in sink.received:
        per_key[ev.key].append(ev.offset)
    expected: dict[str, list[int]] = defaultdict(list)
    for offset, key in enumerate(keys):
        expected[key].append(offset)
    assert per_key == expected  # every record once, each key in offset order
    assert sink.overlapping_same_key == 0  # never two sends of one key at once
    assert sink.max_active > 1  # different keys did overlap
    assert scheduler.commit_points() == {("raw", 0): 200}


async def test_parallelism_is_bounded() -> None:
    sink = FakeSink("slow", delay=0.01)
    scheduler: Scheduler[WorkItem] = Scheduler(_sending_to(sink), 4)
    scheduler.assign(("raw", 0))
    for offset in range(40):
        scheduler.submit(make_item(record(offset, f"k{offset}")))
    assert await scheduler.wait_idle(within=30)
    assert 1 < sink.max_active <= 4


async def test_slow_key_holds_back_commit_but_not_other_keys() -> None:
    gate = asyncio.Event()
    done_fast: list[int] = []

    async def process(item: WorkItem) -> None:
        if item.key == "slow":
            await gate.wait()
        else:
            done_fast.append(item.record.offset)

    scheduler = Scheduler(process, 10)
    scheduler.assign(("raw", 0))
    scheduler.submit(make_item(record(0, "slow")))
    for offset in range(1, 6):
        scheduler.submit(make_item(record(offset, "fast")))
    await asyncio.sleep(0.05)
    assert done_fast == [1, 2, 3, 4, 5]
    assert scheduler.commit_points() == {("raw", 0): 0}  # offset 0 unfinished
    assert scheduler.in_flight == 1
    gate.set()
    assert await scheduler.wait_idle(within=5)
    assert scheduler.commit_points() == {("raw", 0): 6}


async def test_drop_cancels_unfinished_work_of_revoked_partitions() -> None:
    started = asyncio.Event()

    async def process(item: WorkItem) -> None:
        if item.record.partition == 1:
            started.set()
            await asyncio.sleep(60)

    scheduler = Scheduler(process, 10)
    scheduler.assign(("raw", 0))
    scheduler.assign(("raw", 1))
    scheduler.submit(make_item(record(0, "a", partition=0)))
    scheduler.submit(make_item(record(0, "b", partition=1)))
    await asyncio.wait_for(started.wait(), 5)
    assert not await scheduler.wait_idle([("raw", 1)], within=0.05)
    await scheduler.drop([("raw", 1)])
    assert scheduler.in_flight == 0
    assert scheduler.commit_points() == {("raw", 0): 1}
    assert ("raw", 1) not in scheduler.partitions


async def test_slow_sink_throughput_key_parallel_vs_one_at_a_time() -> None:
    """20 ms per call, one partition, 60 keys: order asserted, speed printed only."""
    import time

    elapsed = {}
    for parallel in (1, 64):
        sink = FakeSink("slow", delay=0.02)
        scheduler: Scheduler[WorkItem] = Scheduler(_sending_to(sink), parallel)
        scheduler.assign(("raw", 0))
        started = time.monotonic()
        for offset in range(300):
            scheduler.submit(make_item(record(offset, f"k{offset % 60}")))
        assert await scheduler.wait_idle(within=60)
        elapsed[parallel] = time.monotonic() - started
        for key in {e.key for e in sink.received}:
            offsets = [e.offset for e in sink.received if e.key == key]
            assert offsets == sorted(offsets)
        assert len(sink.received) == 300
    print(
        f"\nin-process, 300 events x 20 ms: one-at-a-time {300 / elapsed[1]:.0f}/s, "
        f"key-parallel(64) {300 / elapsed[64]:.0f}/s: x{elapsed[1] / elapsed[64]:.1f}"
    )


async def test_a_failed_record_waits_for_its_retry_without_holding_a_worker() -> None:
    attempts: dict[int, int] = defaultdict(int)
    done: list[int] = []

    async def process(item: WorkItem) -> None:
        offset = item.record.offset
        attempts[offset] += 1
        if offset == 0 and attempts[offset] == 1:
            raise RuntimeError("a bug of ours")  # the scheduler retries after 1 s
        done.append(offset)

    scheduler = Scheduler(process, 1)  # one worker: it must not sleep on the failure
    scheduler.assign(("raw", 0))
    scheduler.submit(make_item(record(0, "bad")))
    scheduler.submit(make_item(record(1, "bad")))  # behind offset 0: same key, in order
    scheduler.submit(make_item(record(2, "good")))
    await asyncio.sleep(0.2)
    assert done == [2]
    assert scheduler.commit_points() == {("raw", 0): 0}
    assert await scheduler.wait_idle(within=5)
    assert done == [2, 0, 1]
    assert attempts[0] == 2
    assert scheduler.commit_points() == {("raw", 0): 3}


async def test_a_stray_cancelled_error_is_retried_like_a_failure() -> None:
    # A CancelledError out of the processing while the worker itself is not being
    # cancelled: the record must stay unfinished and be tried again, never stranded
    # with the rest of its key behind it.
    attempts: dict[int, int] = defaultdict(int)
    done: list[int] = []

    async def process(item: WorkItem) -> None:
        offset = item.record.offset
        attempts[offset] += 1
        if offset == 0 and attempts[offset] == 1:
            raise asyncio.CancelledError
        done.append(offset)

    scheduler = Scheduler(process, 1)
    scheduler.assign(("raw", 0))
    scheduler.submit(make_item(record(0, "k")))
    scheduler.submit(make_item(record(1, "k")))
    scheduler.submit(make_item(record(2, "other")))
    assert await scheduler.wait_idle(within=5)
    assert done == [2, 0, 1]
    assert scheduler.commit_points() == {("raw", 0): 3}


async def test_work_of_kept_partitions_goes_on_after_drop_cancels_every_worker() -> None:
    done: list[tuple[int, int]] = []

    async def process(item: WorkItem) -> None:
        if item.record.partition == 1:
            await asyncio.sleep(60)
        done.append((item.record.partition, item.record.offset))

    scheduler = Scheduler(process, 2)
    scheduler.assign(("raw", 0))
    scheduler.assign(("raw", 1))
    scheduler.submit(make_item(record(0, "b1", partition=1)))
    scheduler.submit(make_item(record(1, "b2", partition=1)))
    # Both workers are stuck in partition 1: these wait for a free one.
    scheduler.submit(make_item(record(0, "a1", partition=0)))
    scheduler.submit(make_item(record(1, "a2", partition=0)))
    await asyncio.sleep(0.05)
    assert done == []
    await scheduler.drop([("raw", 1)])
    assert await scheduler.wait_idle(within=5)
    assert sorted(done) == [(0, 0), (0, 1)]
    assert scheduler.commit_points() == {("raw", 0): 2}


async def test_busy_keys_take_turns() -> None:
    order: list[str] = []

    async def process(item: WorkItem) -> None:
        order.append(item.key)
        await asyncio.sleep(0)

    scheduler = Scheduler(process, 1)
    scheduler.assign(("raw", 0))
    for offset in range(6):
        scheduler.submit(make_item(record(offset, "hot" if offset < 4 else f"k{offset}")))
    assert await scheduler.wait_idle(within=5)
    # One worker: the hot key's records alternate with the others instead of all first.
    assert order == ["hot", "k4", "k5", "hot", "hot", "hot"]


@dataclass
class _Job:
    tp: tuple[str, int]
    offset: int
    key: str
    timestamp_ms: int = -1


async def test_wait_below_returns_when_the_window_has_room() -> None:
    # Anything with a partition, an offset and a key can be scheduled (replay's jobs).
    gates = {key: asyncio.Event() for key in "abc"}
    done: list[str] = []

    async def process(job: _Job) -> None:
        await gates[job.key].wait()
        done.append(job.key)

    scheduler: Scheduler[_Job] = Scheduler(process, 10)
    scheduler.assign(("dlq", 0))
    for offset, key in enumerate("abc"):
        scheduler.submit(_Job(("dlq", 0), offset, key))
    waiting = asyncio.create_task(scheduler.wait_below(2))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gates["b"].set()
    await asyncio.sleep(0.05)
    assert not waiting.done()  # two still in flight
    gates["c"].set()
    await asyncio.wait_for(waiting, 1)
    assert done == ["b", "c"]
    assert scheduler.commit_points() == {("dlq", 0): 0}
    gates["a"].set()
    assert await scheduler.wait_idle(within=1)
    assert scheduler.commit_points() == {("dlq", 0): 3}
