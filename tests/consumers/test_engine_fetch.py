"""The engine's fetch loop against a fake Kafka consumer: how a full window is refilled,
when partitions are paused, and that nothing is lost or reordered on the way."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from consumers.config import ConsumersSection
from consumers.engine import Engine
from consumers.metrics import ConsumerMetrics
from tests.consumers.fakes import (
    FakeConsumer,
    FakeProducer,
    FakeSink,
    consumer_record,
    deliverer,
    fresh_registry,
    record,
)
from webhook_common.config import KafkaSettings

TP0 = TopicPartition("raw", 0)


def _engine(
    sink: FakeSink, consumer: FakeConsumer, max_in_flight: int
) -> tuple[Engine, ConsumerMetrics]:
    config = ConsumersSection.model_validate(
        {
            "sinks": {sink.name: {"type": "fake"}},
            "routes": [{"name": "all", "sinks": [sink.name]}],
            "concurrency": {"max_in_flight": max_in_flight, "max_parallel": 4},
            "commit_interval_ms": 50,
            "shutdown_grace_seconds": 5,
        }
    )
    metrics = ConsumerMetrics(fresh_registry())
    delivery = deliverer([sink], metrics, dlq=FakeProducer())
    engine = Engine(
        config,
        KafkaSettings(),
        delivery.sinks,
        delivery,
        metrics,
        consumer_factory=lambda: consumer,
    )
    return engine, metrics


class GatedSink(FakeSink):
    """Takes each event only once ``gate`` is set."""

    def __init__(self, name: str, gate: asyncio.Event) -> None:
        super().__init__(name)
        self.gate = gate

    async def send(self, event: Any) -> None:
        await self.gate.wait()
        await super().send(event)


async def _wait(done: Any, within: float) -> None:
    for _ in range(int(within / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine did not get there in time")


async def test_a_briefly_full_window_is_refilled_without_pausing() -> None:
    # Pausing made aiokafka drop what it had buffered for the partition and fetch it
    # again after resume; a window that is full only for a moment must not pause.
    records = [consumer_record(record(n, f"k{n % 7}")) for n in range(200)]
    consumer = FakeConsumer(records)
    sink = FakeSink("s", delay=0.002)
    engine, _ = _engine(sink, consumer, max_in_flight=20)
    task = asyncio.create_task(engine.run())
    try:
        await _wait(lambda: len(sink.received) == 200, within=20)
        assert consumer.pause_calls == 0  # (shutdown pauses everything, so before it)
        # Refilled a tenth of the window at a time, not one record per finished record.
        assert consumer.getmany_calls < 200 // 2
    finally:
        engine.stop()
        await asyncio.wait_for(task, 10)
    by_key: dict[str, list[int]] = {}
    for ev in sink.received:
        by_key.setdefault(ev.key, []).append(ev.offset)
    assert all(offsets == sorted(offsets) for offsets in by_key.values())
    assert sorted(ev.offset for ev in sink.received) == list(range(200))
    assert consumer.committed == {TP0: 200}


async def test_a_window_full_for_long_pauses_and_keeps_polling() -> None:
    # Kafka drops a member that stops calling getmany (max_poll_interval_ms).
    gate = asyncio.Event()
    records = [consumer_record(record(n, f"k{n}")) for n in range(10)]
    consumer = FakeConsumer(records)

    sink = GatedSink("s", gate)
    engine, metrics = _engine(sink, consumer, max_in_flight=4)
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.sleep(1.6)  # longer than the 1 s the engine waits for room
        assert engine.scheduler.in_flight == 4  # the window, never more
        assert consumer.pause_calls >= 1
        polls = consumer.getmany_calls
        await asyncio.sleep(1.5)  # it polls at least once a second or so
        assert consumer.getmany_calls > polls
        assert metrics.paused._value.get() == 1
        gate.set()
        await _wait(lambda: len(sink.received) == 10, within=5)
        assert sorted(ev.offset for ev in sink.received) == list(range(10))
    finally:
        gate.set()
        engine.stop()
        await asyncio.wait_for(task, 10)
    assert consumer.committed == {TP0: 10}


async def test_lag_in_seconds_is_the_age_of_the_oldest_unfinished_record() -> None:
    import time

    gate = asyncio.Event()
    written = int(time.time() * 1000) - 120_000  # the gateway wrote these 2 minutes ago
    records = [consumer_record(record(n, "k"), timestamp_ms=written + n) for n in range(3)]
    consumer = FakeConsumer(records)

    sink = GatedSink("s", gate)
    engine, metrics = _engine(sink, consumer, max_in_flight=10)
    task = asyncio.create_task(engine.run())
    age = metrics.lag_seconds.labels("raw", "0")
    try:
        await _wait(lambda: age._value.get() > 0, within=5)
        assert 119 <= age._value.get() <= 130
        gate.set()
        await _wait(lambda: len(sink.received) == 3, within=5)
        await _wait(lambda: age._value.get() == 0, within=5)  # caught up
    finally:
        gate.set()
        engine.stop()
        await asyncio.wait_for(task, 10)
