"""Scheduling without Kafka: per-key order, cross-key parallelism, offsets, revocation."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from consumers.config import ConsumersConfig, RetryConfig
from consumers.dedup import MemoryDedupStore
from consumers.delivery import Deliverer
from consumers.dlq import DeadLetterWriter
from consumers.engine import Processor, Scheduler, WorkItem, make_item
from consumers.metrics import ConsumerMetrics
from consumers.retry import SinkRetry
from consumers.routing import Router
from consumers.sinks import Sink
from tests.consumers.fakes import FakeProducer, FakeSink, fresh_registry, record


def _pipeline(
    sinks: dict[str, FakeSink], max_parallel: int = 50, **cfg: object
) -> tuple[Scheduler, FakeProducer, ConsumerMetrics]:
    config = ConsumersConfig.model_validate(
        {
            "sinks": {n: {"type": "fake"} for n in sinks},
            "routes": [{"name": "all", "sinks": list(sinks)}],
            **cfg,
        }
    )
    metrics = ConsumerMetrics(fresh_registry())
    producer = FakeProducer()
    typed: dict[str, Sink] = dict(sinks)
    deliverer = Deliverer(
        typed,
        MemoryDedupStore(3600, 10_000),
        {n: SinkRetry(RetryConfig(initial_ms=1, max_ms=2)) for n in sinks},
        metrics,
        DeadLetterWriter(producer, "dlq", "g"),
    )
    processor = Processor(config, Router(config.routes), deliverer, metrics)
    return Scheduler(processor, max_parallel), producer, metrics


async def test_same_key_in_offset_order_and_keys_in_parallel() -> None:
    sink = FakeSink("slow", delay=0.01)
    scheduler, _, _ = _pipeline({"slow": sink})
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
    scheduler, _, _ = _pipeline({"slow": sink}, max_parallel=4)
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


async def test_contract_breaking_record_is_dead_lettered_and_finished() -> None:
    sink = FakeSink("s")
    scheduler, producer, metrics = _pipeline({"s": sink})
    scheduler.assign(("raw", 0))
    good = record(0, "k")
    bad = record(1, "k")
    bad = type(bad)(
        bad.topic,
        bad.partition,
        bad.offset,
        bad.key,
        bad.value,
        tuple((k, v) for k, v in bad.headers if k != "ce_id"),
    )
    scheduler.submit(make_item(good))
    scheduler.submit(make_item(bad))
    assert await scheduler.wait_idle(within=5)
    assert [e.offset for e in sink.received] == [0]
    assert len(producer.sent) == 1
    headers = dict(producer.sent[0]["headers"])
    assert headers["dlq_reason"] == b"contract"
    assert headers["dlq_original_offset"] == b"1"
    assert "ce_id" in headers["dlq_error"].decode()
    assert scheduler.commit_points() == {("raw", 0): 2}
    assert metrics.dead_lettered.labels("-", "contract")._value.get() == 1


async def test_unrouted_dropped_or_dead_lettered_by_config() -> None:
    for action, letters in (("drop", 0), ("dead-letter", 1)):
        sink = FakeSink("s")
        routes = [{"name": "r", "match": {"type": "never.*"}, "sinks": ["s"]}]
        scheduler, producer, metrics = _pipeline({"s": sink}, routes=routes, unrouted=action)
        scheduler.assign(("raw", 0))
        scheduler.submit(make_item(record(0)))
        assert await scheduler.wait_idle(within=5)
        assert sink.received == []
        assert len(producer.sent) == letters
        assert metrics.unrouted.labels(action)._value.get() == 1
        assert scheduler.commit_points() == {("raw", 0): 1}


async def test_fan_out_delivers_to_every_sink_and_repeats_once() -> None:
    a, b = FakeSink("a"), FakeSink("b")
    scheduler, _, metrics = _pipeline({"a": a, "b": b})
    scheduler.assign(("raw", 0))
    for offset in range(3):  # the same delivery three times (provider retried)
        scheduler.submit(make_item(record(offset, "k", event_id="same")))
    scheduler.submit(make_item(record(3, "k", event_id="other")))
    assert await scheduler.wait_idle(within=5)
    assert [e.id for e in a.received] == ["same", "other"]
    assert [e.id for e in b.received] == ["same", "other"]
    assert metrics.duplicates.labels("a")._value.get() == 2


async def test_slow_sink_throughput_key_parallel_vs_one_at_a_time() -> None:
    """20 ms per call, one partition, 60 keys: order asserted, speed printed only."""
    import time

    elapsed = {}
    for parallel in (1, 64):
        sink = FakeSink("slow", delay=0.02)
        scheduler, _, _ = _pipeline({"slow": sink}, max_parallel=parallel)
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
