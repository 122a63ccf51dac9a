"""The gateway's Kafka producer against the real broker: acknowledged means in Kafka,
and a missed deadline is a ``ProduceError`` that leaves the record to Kafka."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gateway.config import ProducerSettings
from gateway.producer import KafkaProducer, ProduceError, Record
from tests.gateway.support import read_topic
from tests.integration.conftest import TopicFactory
from webhook_common.config import KafkaSettings

HEADERS = [("ce_id", b"id-1"), ("ce_specversion", b"1.0")]


def producer(bootstrap: str, topics: list[str], linger_ms: int = 1) -> KafkaProducer:
    return KafkaProducer(
        KafkaSettings(bootstrap_servers=bootstrap),
        ProducerSettings(linger_ms=linger_ms),
        max_request_size=1024 * 1024,
        topics=topics,
    )


async def test_send_returns_once_the_record_is_in_kafka(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("producer", partitions=3)
    p = producer(kafka_bootstrap, [topic])
    await p.start()
    try:
        await asyncio.gather(
            *(p.send(topic, f"k{i}".encode(), b"v%d" % i, HEADERS, 10.0) for i in range(50))
        )
    finally:
        await p.stop()
    records = await read_topic(kafka_bootstrap, topic, 50)
    assert sorted(r.value for r in records) == sorted(b"v%d" % i for i in range(50))


async def test_a_missed_deadline_leaves_the_record_to_kafka(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("producer")
    # The batch lingers 300 ms before it is even sent: the 50 ms deadline passes first.
    p = producer(kafka_bootstrap, [topic], linger_ms=300)
    await p.start()
    try:
        with pytest.raises(ProduceError) as caught:
            await p.send(topic, b"key", b"late", HEADERS, 0.05)
        assert caught.value.reason == "timeout"
        assert caught.value.retriable
        pending = caught.value.pending
        assert pending is not None
        # The deadline cancelled our wait, not aiokafka's delivery: it still completes.
        await asyncio.wait_for(asyncio.shield(pending), 10)
        assert not pending.cancelled()
        # And the task that missed the deadline is usable again (not left cancelled).
        await p.send(topic, b"key", b"next", HEADERS, 10.0)
    finally:
        await p.stop()
    records = await read_topic(kafka_bootstrap, topic, 2)
    assert [r.value for r in records] == [b"late", b"next"]


async def test_a_topic_kafka_does_not_know_is_refused_not_retriable_at_the_deadline(
    kafka_bootstrap: str,
) -> None:
    """Never journaled by the spool: no drain could deliver it."""
    missing = f"missing.{uuid.uuid4().hex[:12]}"
    p = producer(kafka_bootstrap, [missing])
    await p.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ProduceError) as caught:
            # aiokafka waits for the topic's metadata (40 s by default): our deadline
            # must end that wait too.
            await p.send(missing, b"key", b"value", HEADERS, 0.5)
        elapsed = loop.time() - started
    finally:
        await p.stop()
    assert caught.value.reason == "unknown_topic"
    assert not caught.value.retriable
    assert missing in str(caught.value)
    assert 0.5 <= elapsed < 2.0


async def test_a_missing_topic_never_makes_an_existing_one_look_missing(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    """aiokafka's cluster metadata holds only the topics of its last request: asking
    for a missing topic must not make the others unknown (their records would be
    refused, or never journaled, although Kafka has the topic)."""
    existing = await kafka_topic("known", partitions=1)
    missing = f"missing.{uuid.uuid4().hex[:12]}"
    p = producer(kafka_bootstrap, [existing, missing])
    await p.start()
    try:
        with pytest.raises(ProduceError):
            await p.send(missing, b"key", b"value", HEADERS, 0.5)
        await asyncio.sleep(1.2)  # past any cache of the last full metadata answer
        with pytest.raises(ProduceError):
            await p.send(missing, b"key", b"value", HEADERS, 0.5)
        assert p.topic_known(existing)
        assert not p.topic_known(missing)
        future = await p.enqueue(Record(existing, b"k", b"v", HEADERS))
        await asyncio.wait_for(future, 10)
        with pytest.raises(ProduceError) as caught:
            await p.enqueue(Record(missing, b"k", b"v", HEADERS))
    finally:
        await p.stop()
    assert caught.value.reason == "unknown_topic"
    assert not caught.value.retriable


async def test_cancellation_from_elsewhere_is_not_a_timeout(
    kafka_bootstrap: str,
) -> None:
    missing = f"missing.{uuid.uuid4().hex[:12]}"
    p = producer(kafka_bootstrap, [missing])
    await p.start()
    try:
        task = asyncio.create_task(p.send(missing, b"key", b"value", HEADERS, 30.0))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await p.stop()
