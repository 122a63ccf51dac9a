"""The ``inspector`` sink as the consumer sees it: entry point, contract, start, close."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumers.sinks import ENTRY_POINT_GROUP, SinkError
from consumers.sinks.inspector import InspectorConfig, InspectorSink
from consumers.testing import SinkContract
from tests.consumers.harness import free_port
from tests.consumers.sinks.inspector.support import context, event


def test_registered_under_its_entry_point() -> None:
    (ep,) = entry_points(group=ENTRY_POINT_GROUP, name="inspector")
    assert ep.value == "consumers.sinks.inspector:InspectorSink"
    assert ep.load() is InspectorSink


async def test_start_errors_are_sink_errors(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sink = InspectorSink("i", InspectorConfig(port=port), context())
        with pytest.raises(SinkError, match=rf"cannot listen on 127.0.0.1:{port}"):
            await sink.start()
    missing = InspectorSink(
        "i", InspectorConfig(port=0, replay_config=tmp_path / "nope.yaml"), context()
    )
    with pytest.raises(SinkError, match=r"replay_config .*: no such file"):
        await missing.start()


async def test_close_ends_streams_frees_the_port_and_refuses_sends() -> None:
    sink = InspectorSink("i", InspectorConfig(port=0), context())
    await sink.start()
    port = sink.port
    url = f"http://127.0.0.1:{port}/api/stream"
    async with (
        httpx.AsyncClient() as client,
        asyncio.timeout(20),
        client.stream("GET", url) as response,
    ):
        await sink.aclose()
        async for _ in response.aiter_lines():
            pass  # ends: the server closed the stream
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
    with pytest.raises(SinkError, match="closed"):
        await sink.send(event(1))


async def test_start_twice_serves_once_and_start_after_close_is_refused() -> None:
    sink = InspectorSink("i", InspectorConfig(port=0), context())
    await sink.start()
    port = sink.port
    await sink.start()
    assert sink.port == port
    await sink.aclose()
    with pytest.raises(SinkError, match="closed"):
        await sink.start()


def test_two_inspectors_share_one_registry() -> None:
    registry = CollectorRegistry()
    InspectorSink("a", InspectorConfig(port=0), context(registry))
    InspectorSink("b", InspectorConfig(port=0), context(registry))  # no duplicate metric


class TestInspectorSinkContract(SinkContract):
    sink_type = "inspector"
    broken_retriable = False  # a port in use does not get better by retrying

    @pytest.fixture(autouse=True)
    def _ports(self) -> Iterator[None]:
        self.port = free_port()
        self.busy = socket.socket()
        self.busy.bind(("127.0.0.1", 0))
        self.busy.listen()
        yield
        self.busy.close()

    def sink_config(self) -> dict[str, Any]:
        return {"port": self.port}

    def broken_config(self) -> dict[str, Any] | None:
        return {"port": self.busy.getsockname()[1]}

    async def delivered(self, expected: int) -> list[str]:
        async with httpx.AsyncClient() as client:
            while True:
                url = f"http://127.0.0.1:{self.port}/api/events"
                ids = [e["id"] for e in (await client.get(url)).json()]
                if len(ids) >= expected:
                    return ids
                await asyncio.sleep(0.05)
