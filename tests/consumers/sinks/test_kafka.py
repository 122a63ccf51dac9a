"""The Kafka sink's topic templates (no broker needed; see tests/integration)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from consumers.plugins import build_sinks
from consumers.sinks import SinkContext, SinkError
from consumers.sinks.kafka import template_fields, topic_name
from consumers.testing import make_event
from webhook_common.errors import ConfigError


def test_topic_name_fills_in_and_sanitises() -> None:
    event = make_event(source="crystallize", type="order created/v2")
    assert topic_name("events.{source}.{type}", event) == "events.crystallize.order_created_v2"
    assert topic_name("fixed-topic", event) == "fixed-topic"
    assert topic_name("{type}", make_event(type="ü" * 300)) == "_" * 249


def test_a_template_giving_an_illegal_name_is_not_retriable() -> None:
    with pytest.raises(SinkError) as info:
        topic_name("{type}", make_event(type=".."))
    assert info.value.retriable is False


def test_template_fields() -> None:
    assert template_fields("events.{source}.{type}") == {"source", "type"}
    assert template_fields("plain") == set()
    for bad in ("{key}", "{type!r}", "{source:>10}", "{0}"):
        with pytest.raises(ValueError, match="not allowed"):
            template_fields(bad)


def test_config_error_names_the_key() -> None:
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    with pytest.raises(ConfigError) as info:
        build_sinks({"bus": {"type": "kafka", "topic": "events.{key}"}}, context)
    assert "consumers.sinks.bus.topic: got 'events.{key}'" in str(info.value)
    assert "{source} and {type}" in str(info.value)


async def test_a_cancelled_produce_is_a_retriable_failure_not_a_delivery() -> None:
    # A produce future cancelled under the sink (the producer stopping) tells nothing
    # about whether the broker has the record.
    import asyncio
    from typing import Any

    from consumers.sinks.kafka import KafkaSink

    class CancellingProducer:
        async def send(self, topic: str, **kw: Any) -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.cancel()
            return future

    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    sink = build_sinks({"bus": {"type": "kafka", "topic": "t"}}, context)["bus"]
    assert isinstance(sink, KafkaSink)
    sink._producer = CancellingProducer()
    with pytest.raises(SinkError) as info:
        await sink.send(make_event())
    assert info.value.retriable is True
    assert "cancelled" in str(info.value)
