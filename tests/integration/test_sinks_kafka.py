"""The Kafka sink on the real broker: contract, republished records, topic templates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from consumers.event import Event
from consumers.plugins import build_sinks
from consumers.sinks import BatchSink, SinkContext, SinkError
from consumers.testing import SinkContract, make_event
from faults.reconcile import read_topic
from tests.integration.conftest import TopicFactory


def header(record: ConsumerRecord[Any, Any], name: str) -> str:
    value: bytes = dict(record.headers)[name]
    return value.decode()


class TestKafkaSinkContract(SinkContract):
    sink_type = "kafka"
    broken_retriable = True

    @pytest.fixture(autouse=True)
    async def _target(self, kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
        self.bootstrap = kafka_bootstrap
        self.topic = await kafka_topic("sink-contract", partitions=3)

    def sink_context(self) -> SinkContext:
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "request_timeout_ms": 5000,
        }
        return SinkContext(self.bootstrap, kwargs, CollectorRegistry())

    def sink_config(self) -> dict[str, Any]:
        return {"topic": self.topic}  # a template without placeholders is one fixed topic

    async def delivered(self, expected: int) -> list[str]:
        return [header(r, "ce_id") for r in await read_topic(self.bootstrap, self.topic, expected)]

    def broken_config(self) -> dict[str, Any] | None:
        # The broker does not auto-create topics, and the sink is not asked to.
        return {"topic": f"missing.{uuid.uuid4().hex}"}


@pytest.fixture
async def created_topics(kafka_bootstrap: str) -> AsyncIterator[list[str]]:
    """Topics a test makes the sink create; deleted afterwards."""
    names: list[str] = []
    yield names
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def test_republished_record_matches_the_original(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("republish")
    event = make_event(
        "order-9",
        headers={"x-crystallize-signature": "abc"},
        body=b'{"raw":  true}',
        method="POST",
        query="a=1",
    )
    context = SinkContext(
        kafka_bootstrap, {"bootstrap_servers": kafka_bootstrap}, CollectorRegistry()
    )
    sink = build_sinks({"bus": {"type": "kafka", "topic": topic}}, context)["bus"]
    await sink.start()
    try:
        await sink.send(event)
    finally:
        await sink.aclose()
    (record,) = await read_topic(kafka_bootstrap, topic, 1)
    assert record.key == b"order-9"
    assert record.value == b'{"raw":  true}'
    assert list(record.headers) == event.meta().to_headers()
    again = Event.from_record(
        topic=topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
    assert again.meta() == event.meta()


async def test_template_routes_by_source_and_type_and_creates_topics(
    kafka_bootstrap: str, created_topics: list[str]
) -> None:
    source = f"src{uuid.uuid4().hex[:8]}"
    created = make_event("k1", source=source, type="order created/v2")
    paid = make_event("k2", source=source, type="order.paid")
    context = SinkContext(
        kafka_bootstrap, {"bootstrap_servers": kafka_bootstrap}, CollectorRegistry()
    )
    section = {"type": "kafka", "topic": "events.{source}.{type}", "create_topics": True}
    sink = build_sinks({"bus": section}, context)["bus"]
    assert isinstance(sink, BatchSink)
    created_topics.extend([f"events.{source}.order_created_v2", f"events.{source}.order.paid"])
    await sink.start()
    try:
        await asyncio.wait_for(sink.send_batch([created, paid, created]), 60)
    finally:
        await sink.aclose()
    first = await read_topic(kafka_bootstrap, created_topics[0], 2)
    second = await read_topic(kafka_bootstrap, created_topics[1], 1)
    assert [header(r, "ce_id") for r in first] == [created.id, created.id]
    assert [header(r, "ce_id") for r in second] == [paid.id]


async def test_record_too_large_is_not_retriable(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("too-large")
    context = SinkContext(
        kafka_bootstrap, {"bootstrap_servers": kafka_bootstrap}, CollectorRegistry()
    )
    sink = build_sinks({"bus": {"type": "kafka", "topic": topic}}, context)["bus"]
    await sink.start()
    try:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event(body=b"x" * 2_000_000))
    finally:
        await sink.aclose()
    assert info.value.retriable is False
    assert "MessageSizeTooLargeError" in str(info.value)


# What `gateway topics create` gives the raw topic: the default body_limit plus 64 KiB.
RECORD_LIMIT = 1024 * 1024 + 64 * 1024


async def _max_message_bytes(bootstrap: str, topic: str) -> int:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    finally:
        await admin.close()
    entries = {e[0]: e[1] for e in response.resources[0][4]}
    return int(entries["max.message.bytes"])


async def test_a_body_at_the_gateway_limit_is_republished(
    kafka_bootstrap: str, kafka_topic: TopicFactory, created_topics: list[str]
) -> None:
    # A 1 MiB body (the default body_limit) is a record the raw topic holds; the sink
    # must be able to write it again, and size the topics it creates to hold it.
    topic = await kafka_topic("at-limit", config={"max.message.bytes": str(RECORD_LIMIT)})
    body = b'"' + b"x" * (1024 * 1024 - 2) + b'"'
    context = SinkContext(
        kafka_bootstrap, {"bootstrap_servers": kafka_bootstrap}, CollectorRegistry()
    )
    source = f"big{uuid.uuid4().hex[:8]}"
    created_topics.append(f"events.{source}.order.created")
    sections: dict[str, dict[str, Any]] = {
        "fixed": {"type": "kafka", "topic": topic},
        "made": {"type": "kafka", "topic": "events.{source}.{type}", "create_topics": True},
    }
    sinks = build_sinks(sections, context)
    for sink in sinks.values():
        await sink.start()
    try:
        for sink in sinks.values():
            await asyncio.wait_for(
                sink.send(make_event("k", body=body, source=source, type="order.created")), 60
            )
    finally:
        for sink in sinks.values():
            await sink.aclose()
    for name in (topic, created_topics[0]):
        (record,) = await read_topic(kafka_bootstrap, name, 1)
        assert record.value == body
    assert await _max_message_bytes(kafka_bootstrap, created_topics[0]) >= RECORD_LIMIT
