"""Producers whose sequence numbers the real broker refuses (``OutOfOrderSequenceNumber``,
what a broker restart under load gave the gateway in the fault suite): each is replaced
and the records it refused are retried, never set aside or dead-lettered.

The refusal is made by moving the aiokafka producer's next sequence number for a
partition three ahead: the broker then answers every batch for that partition with
``OutOfOrderSequenceNumber``, as it did after the restart, and aiokafka alone never
recovers (every later record fails the same way)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.config import RetryConfig
from consumers.dedup import MemoryDedupStore
from consumers.delivery import Deliverer, Outcome
from consumers.dlq import DeadLetterWriter
from consumers.metrics import ConsumerMetrics
from consumers.retry import SinkRetry
from consumers.sinks import SinkContext, SinkError
from consumers.sinks.kafka import KafkaSink, KafkaSinkConfig
from gateway.config import ProducerSettings, SpoolSettings
from gateway.metrics import IngressMetrics
from gateway.producer import KafkaProducer, ProduceError, Record
from gateway.spool import Spool
from tests.consumers.fakes import FakeSink, event, record
from tests.gateway.support import read_topic
from tests.integration.conftest import TopicFactory
from webhook_common.config import KafkaSettings
from webhook_common.idempotent import RenewingProducer

HEADERS = [("ce_id", b"id-1"), ("ce_specversion", b"1.0")]


def break_sequence(producer: AIOKafkaProducer | None, topic: str) -> None:
    assert producer is not None
    producer._txn_manager.increment_sequence_number(TopicPartition(topic, 0), 3)


async def eventually(attempt: Callable[[], Awaitable[object]], within: float = 20.0) -> int:
    """Run ``attempt`` until it returns without raising; how many attempts failed."""
    failures = 0
    async with asyncio.timeout(within):
        while True:
            try:
                await attempt()
                return failures
            except Exception:
                failures += 1
                await asyncio.sleep(0.1)


def gateway_producer(bootstrap: str, topic: str, renewals: list[int]) -> KafkaProducer:
    return KafkaProducer(
        KafkaSettings(bootstrap_servers=bootstrap),
        ProducerSettings(linger_ms=1),
        max_request_size=1024 * 1024,
        topics=[topic],
        on_renew=lambda: renewals.append(1),
    )


async def test_the_gateway_producer_is_replaced_and_its_refusals_are_retriable(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("renew")
    renewals: list[int] = []
    p = gateway_producer(kafka_bootstrap, topic, renewals)
    await p.start()
    try:
        await p.send(topic, b"k", b"before", HEADERS, 10.0)
        break_sequence(p._client(), topic)
        refused: list[ProduceError] = []
        try:
            await p.send(topic, b"k", b"refused", HEADERS, 10.0)
        except ProduceError as exc:
            refused.append(exc)
        assert [(e.reason, e.retriable) for e in refused] == [("error", True)]
        assert "OutOfOrderSequenceNumber" in str(refused[0])
        await eventually(lambda: p.send(topic, b"k", b"after", HEADERS, 10.0))
    finally:
        await p.stop()
    assert renewals == [1]
    records = await read_topic(kafka_bootstrap, topic, 2)
    assert [r.value for r in records] == [b"before", b"after"]


async def test_a_spooled_record_the_broken_producer_refused_is_delivered_not_set_aside(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topic("renew-spool")
    renewals: list[int] = []
    p = gateway_producer(kafka_bootstrap, topic, renewals)
    await p.start()
    registry = CollectorRegistry()
    spool = await Spool.open(
        SpoolSettings(enabled=True, path=tmp_path / "spool", retry_seconds=0.2),
        IngressMetrics(registry),
        p.enqueue,
        10.0,
    )
    try:
        await p.send(topic, b"k", b"direct", HEADERS, 10.0)
        break_sequence(p._client(), topic)
        spool.start()
        for n in range(3):
            await spool.append(
                Record(topic, b"k", b"spooled-%d" % n, HEADERS), source="s", reason="backlog"
            )
        assert await spool.wait_drained(30.0), spool.status()
    finally:
        await spool.stop(drain_within=0)
        await p.stop()
    assert registry.get_sample_value("webhookgw_ingress_spool_rejected_total") == 0
    assert not (tmp_path / "spool" / "rejected").exists()
    assert renewals == [1]
    records = await read_topic(kafka_bootstrap, topic, 4)
    # One partition and one key: the spooled records in their order, behind the direct one.
    assert [r.value for r in records] == [b"direct", b"spooled-0", b"spooled-1", b"spooled-2"]


async def test_a_dead_letter_the_broken_producer_refused_is_written_by_its_replacement(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    dlq = await kafka_topic("renew-dlq")
    metrics = ConsumerMetrics(CollectorRegistry())
    producer = RenewingProducer(
        lambda: AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all"
        ),
        name="dead-letter producer",
        on_renew=metrics.producer_renewals.inc,
    )
    await producer.start()
    sink = FakeSink("s", fail=lambda e, n: SinkError("400 bad request", retriable=False))
    deliverer = Deliverer(
        {"s": sink},
        MemoryDedupStore(3600, 100),
        {"s": SinkRetry(RetryConfig(initial_ms=1, max_ms=5, max_attempts=2))},
        metrics,
        DeadLetterWriter(producer, dlq, "grp"),
        infra_backoff_max=0.2,
    )
    try:
        await producer.send_and_wait(dlq, b"first", b"k")
        break_sequence(producer.current, dlq)
        rec = record(7, "k")
        outcome = await asyncio.wait_for(deliverer.deliver(event(7), rec, "s"), 30)
    finally:
        await producer.stop()
    assert outcome is Outcome.DEAD_LETTERED
    assert metrics.producer_renewals._value.get() == 1
    letters = await read_topic(kafka_bootstrap, dlq, 2)
    assert letters[0].value == b"first"
    assert dict(letters[1].headers)["dlq_original_offset"] == b"7"


async def test_the_kafka_sink_reports_a_lost_session_as_retriable_and_recovers(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    target = await kafka_topic("renew-sink")
    sink = KafkaSink(
        "republish",
        KafkaSinkConfig(topic=target, linger_ms=1),
        SinkContext(kafka_bootstrap, {}, CollectorRegistry()),
    )
    await sink.start()
    try:
        await sink.send(event(0))
        assert sink._producer is not None
        break_sequence(sink._producer.current, target)
        refused: list[SinkError] = []
        try:
            await sink.send(event(1))
        except SinkError as exc:
            refused.append(exc)
        # Retriable: the delivery retries it, it is never dead-lettered for this.
        assert [e.retriable for e in refused] == [True]
        await eventually(lambda: sink.send(event(1)))
    finally:
        await sink.aclose()
    records = await read_topic(kafka_bootstrap, target, 2)
    assert [dict(r.headers)["ce_id"] for r in records] == [b"ev-0-0", b"ev-0-1"]
