"""What happens to one record: the contract check, routing and fan-out, with the
scheduler that runs the processor in ``run``."""

from __future__ import annotations

import asyncio

from consumers.config import ConsumersSection
from consumers.metrics import ConsumerMetrics
from consumers.processor import Processor
from consumers.record import WorkItem, make_item
from consumers.routing import Router
from consumers.scheduler import Scheduler
from tests.consumers.fakes import FakeProducer, FakeSink, deliverer, fresh_registry, record


def _pipeline(
    sinks: dict[str, FakeSink], **cfg: object
) -> tuple[Scheduler[WorkItem], FakeProducer, ConsumerMetrics]:
    config = ConsumersSection.model_validate(
        {
            "sinks": {n: {"type": "fake"} for n in sinks},
            "routes": [{"name": "all", "sinks": list(sinks)}],
            **cfg,
        }
    )
    metrics = ConsumerMetrics(fresh_registry())
    producer = FakeProducer()
    delivery = deliverer(sinks.values(), metrics, dlq=producer)
    processor = Processor(config, Router(config.routes), delivery, metrics)
    return Scheduler(processor, 50), producer, metrics


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


async def test_a_sink_raising_cancelled_error_does_not_strand_its_key() -> None:
    # The sink's CancelledError is not the consumer shutting down: that attempt failed
    # and is retried, and the key's later records follow it, in offset order.
    sink = FakeSink("s", fail=lambda e, n: asyncio.CancelledError() if n == 1 else None)
    scheduler, producer, metrics = _pipeline({"s": sink})
    scheduler.assign(("raw", 0))
    for offset in range(4):
        scheduler.submit(make_item(record(offset, "k")))
    scheduler.submit(make_item(record(4, "other")))
    assert await scheduler.wait_idle(within=5)
    assert [e.offset for e in sink.received if e.key == "k"] == [0, 1, 2, 3]
    assert [e.offset for e in sink.received if e.key == "other"] == [4]
    assert scheduler.commit_points() == {("raw", 0): 5}
    assert producer.sent == []
    assert metrics.deliveries.labels("s", "retriable_error")._value.get() == 1
