"""Delivery spans: one per record and sink, child of and linked to the record's trace
context, attempts as events; the HTTP sink passes the trace context on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from consumers.config import ConsumersSection, RetryConfig
from consumers.dedup import MemoryDedupStore
from consumers.delivery import Deliverer, Outcome
from consumers.dlq import DeadLetterWriter
from consumers.metrics import ConsumerMetrics
from consumers.plugins import build_sinks
from consumers.processor import Processor
from consumers.record import SourceRecord, make_item
from consumers.retry import SinkRetry
from consumers.routing import Router
from consumers.sinks import Sink, SinkContext, SinkError
from tests.consumers.fakes import FakeProducer, FakeSink, fresh_registry
from tests.consumers.sinks.http_target import Target, serve
from tests.spans import MemoryTracing, hex_ids, memory_tracing, traceparent_of
from webhook_common.contract import EventMeta, format_time

__all__ = ["memory_tracing"]

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GATEWAY_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{GATEWAY_SPAN}-01"


@pytest.fixture
def target() -> Iterator[Target]:
    yield from serve(Target())


def traced_record(
    offset: int, traceparent: str = TRACEPARENT, tracestate: str = ""
) -> SourceRecord:
    meta = EventMeta(
        id=f"ev-{offset}",
        source="shop",
        type="order.created",
        time=format_time(1_700_000_000.0),
        subject="k",
        traceparent=traceparent,
        tracestate=tracestate,
    )
    return SourceRecord("raw", 2, offset, b"k", b'{"a": 1}', tuple(meta.to_headers()))


def traced_deliverer(
    sinks: dict[str, Sink], tracer: MemoryTracing | None, dlq: FakeProducer | None = None
) -> Deliverer:
    return Deliverer(
        sinks,
        MemoryDedupStore(3600, 100),
        {name: SinkRetry(RetryConfig(initial_ms=1, max_ms=2, max_attempts=3)) for name in sinks},
        ConsumerMetrics(fresh_registry()),
        DeadLetterWriter(dlq, "dlq", "g") if dlq is not None else None,
        tracer=tracer,
    )


def links(span: ReadableSpan) -> list[tuple[str, str]]:
    return [(f"{x.context.trace_id:032x}", f"{x.context.span_id:016x}") for x in span.links]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_span_per_sink_child_of_and_linked_to_the_record(
    memory_tracing: MemoryTracing,
) -> None:
    sinks: dict[str, Sink] = {"a": FakeSink("a"), "b": FakeSink("b")}
    config = ConsumersSection.model_validate(
        {
            "sinks": {name: {"type": "fake"} for name in sinks},
            "routes": [{"name": "all", "sinks": list(sinks)}],
        }
    )
    deliverer = traced_deliverer(sinks, memory_tracing)
    metrics = ConsumerMetrics(fresh_registry())
    processor = Processor(config, Router(config.routes), deliverer, metrics)
    await processor(make_item(traced_record(41, tracestate="congo=t61rcWkgMzE")))
    spans = sorted(memory_tracing.spans, key=lambda s: s.name)
    assert [s.name for s in spans] == ["deliver a", "deliver b"]
    for span, sink in zip(spans, "ab", strict=True):
        assert span.kind is SpanKind.CONSUMER
        assert hex_ids(span)[0] == TRACE
        assert span.parent is not None
        assert f"{span.parent.span_id:016x}" == GATEWAY_SPAN
        assert links(span) == [(TRACE, GATEWAY_SPAN)]
        assert span.get_span_context().trace_state.to_header() == "congo=t61rcWkgMzE"  # type: ignore[union-attr]
        assert attrs(span) == {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "deliver",
            "messaging.destination.name": "raw",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 41,
            "cloudevents.event_id": "ev-41",
            "cloudevents.event_type": "order.created",
            "webhookgw.source": "shop",
            "webhookgw.sink": sink,
            "webhookgw.outcome": "delivered",
        }
        assert [e.name for e in span.events] == ["delivered"]
        assert span.status.status_code is StatusCode.UNSET


async def test_attempts_are_events_of_one_span_and_a_dead_letter_is_an_error(
    memory_tracing: MemoryTracing,
) -> None:
    flaky = FakeSink("flaky", fail=lambda e, n: SinkError("503", retriable=True) if n < 3 else None)
    refusing = FakeSink("refusing", fail=lambda e, n: SinkError("400 secret", retriable=False))
    dlq = FakeProducer()
    deliverer = traced_deliverer({"flaky": flaky, "refusing": refusing}, memory_tracing, dlq)
    item = make_item(traced_record(1))
    assert item.event is not None
    assert await deliverer.deliver(item.event, item.record, "flaky") is Outcome.DELIVERED
    assert await deliverer.deliver(item.event, item.record, "refusing") is Outcome.DEAD_LETTERED
    assert await deliverer.deliver(item.event, item.record, "flaky") is Outcome.DUPLICATE
    delivered, dead, duplicate = memory_tracing.spans
    assert [(e.name, dict(e.attributes or {})) for e in delivered.events] == [
        (
            "attempt failed",
            {"webhookgw.attempt": 1, "error.type": "SinkError", "webhookgw.retriable": True},
        ),
        (
            "attempt failed",
            {"webhookgw.attempt": 2, "error.type": "SinkError", "webhookgw.retriable": True},
        ),
        ("delivered", {"webhookgw.attempt": 3}),
    ]
    assert attrs(dead)["webhookgw.outcome"] == "dead_lettered"
    assert dead.status.status_code is StatusCode.ERROR
    # The error's type, never its message (which may quote what a span must not hold).
    assert "secret" not in repr([e.attributes for e in dead.events])
    assert attrs(duplicate)["webhookgw.outcome"] == "duplicate"
    assert duplicate.events == ()
    assert len(dlq.sent) == 1


async def test_a_record_without_trace_context_gets_a_root_span(
    memory_tracing: MemoryTracing,
) -> None:
    deliverer = traced_deliverer({"s": FakeSink("s")}, memory_tracing)
    for offset, traceparent in enumerate(["", "00-not-a-traceparent"]):
        item = make_item(traced_record(offset, traceparent=traceparent))
        assert item.event is not None
        await deliverer.deliver(item.event, item.record, "s")
    for span in memory_tracing.spans:
        assert span.parent is None
        assert span.links == ()


async def test_without_tracing_delivery_is_not_wrapped(memory_tracing: MemoryTracing) -> None:
    deliverer = traced_deliverer({"s": FakeSink("s")}, None)
    assert deliverer.deliver.__func__ is Deliverer.deliver  # type: ignore[attr-defined]
    item = make_item(traced_record(0))
    assert item.event is not None
    assert await deliverer.deliver(item.event, item.record, "s") is Outcome.DELIVERED
    assert memory_tracing.spans == []


def http_sink(target: Target) -> Sink:
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    return build_sinks({"hook": {"type": "http", "url": target.url + "/in"}}, context)["hook"]


async def test_the_http_sink_sends_the_delivery_spans_trace_context(
    memory_tracing: MemoryTracing, target: Target
) -> None:
    sink = http_sink(target)
    await sink.start()
    try:
        deliverer = traced_deliverer({"hook": sink}, memory_tracing)
        item = make_item(traced_record(0, tracestate="a=b"))
        assert item.event is not None
        assert await deliverer.deliver(item.event, item.record, "hook") is Outcome.DELIVERED
    finally:
        await sink.aclose()
    (span,) = memory_tracing.spans
    (request,) = target.requests()
    assert request.headers["traceparent"] == traceparent_of(span)
    assert request.headers["tracestate"] == "a=b"


async def test_without_tracing_the_http_sink_passes_the_records_trace_context_on(
    target: Target,
) -> None:
    sink = http_sink(target)
    await sink.start()
    try:
        deliverer = traced_deliverer({"hook": sink}, None)
        for offset, traceparent in enumerate([TRACEPARENT, "00-bogus", ""]):
            item = make_item(traced_record(offset, traceparent=traceparent, tracestate="a=b"))
            assert item.event is not None
            await deliverer.deliver(item.event, item.record, "hook")
    finally:
        await sink.aclose()
    valid, bogus, absent = target.requests()
    assert (valid.headers["traceparent"], valid.headers["tracestate"]) == (TRACEPARENT, "a=b")
    for request in (bogus, absent):
        assert "traceparent" not in request.headers
        assert "tracestate" not in request.headers
