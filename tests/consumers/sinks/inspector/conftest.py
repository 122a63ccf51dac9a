"""The ``started`` fixture: an inspector on a free loopback port, and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumers.sinks.inspector import InspectorConfig, InspectorSink
from tests.consumers.sinks.inspector.support import Started, context


@pytest.fixture
async def started() -> AsyncIterator[Started]:
    registry = CollectorRegistry()
    sink = InspectorSink("inspector", InspectorConfig(port=0, max_events=3), context(registry))
    await sink.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.port}") as client:
            yield sink, client, registry
    finally:
        await sink.aclose()
