"""Tracing for tests: a :class:`Tracing` whose spans stay in memory, read back at will."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from webhook_common.tracing import Tracing


class MemoryTracing(Tracing):
    """Spans are exported as they end, to a list (:attr:`spans`)."""

    def __init__(self, service: str = "test") -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        super().__init__(provider)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def memory_tracing() -> Iterator[MemoryTracing]:
    tracing = MemoryTracing()
    try:
        yield tracing
    finally:
        tracing.shutdown()


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of ``span`` in the hex of a ``traceparent``."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def traceparent_of(span: ReadableSpan) -> str:
    """The ``traceparent`` naming ``span``."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
