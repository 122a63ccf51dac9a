"""The ``inspector`` sink: its page and API on a real loopback port."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumers.event import Event
from consumers.plugins import load_sink_class
from consumers.sinks import SinkContext, SinkError
from consumers.sinks.inspector import TOKEN_HEADER, InspectorConfig, InspectorSink, replay_argv
from consumers.testing import SinkContract
from tests.consumers.harness import free_port


def event(n: int, *, source: str = "crystallize", type_: str = "order", key: str = "k1",
          body: bytes = b'{"order": {"get": {"id": "k1"}}}') -> Event:  # fmt: skip
    return Event(
        id=f"e{n}",
        source=source,
        type=type_,
        key=key,
        time=f"2025-10-07T11:48:{n:02d}.000000Z",
        headers={"x-crystallize-signature": "sig"},
        body=body,
        topic="webhooks.raw",
        partition=2,
        offset=100 + n,
    )


def context(registry: CollectorRegistry | None = None) -> SinkContext:
    return SinkContext("127.0.0.1:9", {}, registry or CollectorRegistry())


@pytest.fixture
async def started() -> AsyncIterator[tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry]]:
    registry = CollectorRegistry()
    sink = InspectorSink("inspector", InspectorConfig(port=0, max_events=3), context(registry))
    await sink.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.port}") as client:
            yield sink, client, registry
    finally:
        await sink.aclose()


def token_of(page: str) -> str:
    match = re.search(r'name="inspector-token" content="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status
    return doc


def test_registered_under_its_entry_point() -> None:
    loaded: object = load_sink_class("inspector")
    assert loaded is InspectorSink


async def test_page_is_served_with_token_nonce_and_csp(
    started: tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry],
) -> None:
    _, client, _ = started
    response = await client.get("/")
    assert response.status_code == 200
    page = response.text
    csp = response.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in page
    assert "__TOKEN__" not in page
    assert "__NONCE__" not in page
    assert len(token_of(page)) >= 24
    assert response.headers["cache-control"] == "no-store"


async def test_keeps_the_last_max_events_and_filters(
    started: tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry],
) -> None:
    sink, client, _ = started
    await sink.send(event(1))
    await sink.send(event(2, type_="item", key="i9"))
    await sink.send(event(3, source="github", type_="push"))
    await sink.send(event(4, key="k2"))
    listed = (await client.get("/api/events")).json()
    assert [e["id"] for e in listed] == ["e2", "e3", "e4"]  # max_events=3
    first = listed[0]
    assert first["kafka"] == {"topic": "webhooks.raw", "partition": 2, "offset": 102}
    assert first["headers"] == {"x-crystallize-signature": "sig"}
    assert first["body"] == '{\n  "order": {\n    "get": {\n      "id": "k1"\n    }\n  }\n}'
    by_source = (await client.get("/api/events", params={"source": "crystallize"})).json()
    assert [e["id"] for e in by_source] == ["e2", "e4"]
    by_both = (await client.get("/api/events", params={"type": "order", "key": "k2"})).json()
    assert [e["id"] for e in by_both] == ["e4"]


async def test_body_display_raw_and_truncated() -> None:
    sink = InspectorSink("i", InspectorConfig(port=0, max_body_bytes=8), context())
    await sink.start()
    try:
        await sink.send(event(1, body=b"not json at all"))
        await sink.send(event(2, body=b"\xff\xfe{}"))
        async with httpx.AsyncClient() as client:
            got = (await client.get(f"http://127.0.0.1:{sink.port}/api/events")).json()
    finally:
        await sink.aclose()
    assert (got[0]["body"], got[0]["body_truncated"], got[0]["body_bytes"]) == (
        "not json",
        True,
        15,
    )
    assert got[1]["body"] == "\ufffd\ufffd{}"
    assert got[1]["body_truncated"] is False


async def read_sse(lines: AsyncIterator[str], count: int) -> list[dict[str, Any]]:
    """The next ``count`` webhook events of an open stream's lines."""
    found: list[dict[str, Any]] = []
    frame: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if frame.get("event") == "webhook":
                record = json.loads(frame["data"])
                assert str(record["seq"]) == frame["id"]
                found.append(record)
                if len(found) == count:
                    return found
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = value
    raise AssertionError(f"stream ended after {found}")


async def test_stream_sends_backlog_then_live_events_and_resumes(
    started: tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry],
) -> None:
    sink, client, _ = started
    await sink.send(event(1))
    async with asyncio.timeout(20):
        async with client.stream("GET", "/api/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            (backlog,) = await read_sse(lines, 1)
            assert backlog["id"] == "e1"
            await sink.send(event(2))
            (live,) = await read_sse(lines, 1)
            assert live["id"] == "e2"
        await sink.send(event(3))
        # A reconnecting EventSource sends Last-Event-ID: only what it missed comes.
        headers = {"last-event-id": str(live["seq"])}
        async with client.stream("GET", "/api/stream", headers=headers) as response:
            (missed,) = await read_sse(response.aiter_lines(), 1)
            assert missed["id"] == "e3"
    bad = await client.get("/api/stream", headers={"last-event-id": "x"})
    is_problem(bad, 400)


async def test_foreign_host_header_is_refused_and_counted(
    started: tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry],
) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read events.
    _, client, registry = started
    doc = is_problem(await client.get("/api/events", headers={"host": "evil.example"}), 403)
    assert "Host" in doc["detail"]
    ok = await client.get("/api/events", headers={"host": "localhost:1"})
    assert ok.status_code == 200
    count = registry.get_sample_value(
        "webhookgw_inspector_requests_total",
        {"sink": "inspector", "path": "/api/events", "status": "403"},
    )
    assert count == 1


async def test_unknown_path_and_method_are_problems(
    started: tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry],
) -> None:
    _, client, registry = started
    is_problem(await client.get("/nope"), 404)
    is_problem(await client.get("/api/replay"), 405)
    assert (
        registry.get_sample_value(
            "webhookgw_inspector_requests_total",
            {"sink": "inspector", "path": "other", "status": "404"},
        )
        == 1
    )


async def test_replay_refusals(
    started: tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry],
) -> None:
    sink, client, _ = started
    await sink.send(event(1))
    seq = (await client.get("/api/events")).json()[0]["seq"]
    token = token_of((await client.get("/")).text)
    body = {"seq": seq, "sink": "events_file"}
    # No token (what a cross-site form would send), or a wrong one.
    is_problem(await client.post("/api/replay", json=body), 403)
    is_problem(await client.post("/api/replay", json=body, headers={TOKEN_HEADER: "x"}), 403)
    auth = {TOKEN_HEADER: token}
    is_problem(await client.post("/api/replay", content=b"{", headers=auth), 400)
    is_problem(await client.post("/api/replay", json={"seq": "1"}, headers=auth), 400)
    is_problem(await client.post("/api/replay", json={**body, "seq": 999}, headers=auth), 404)
    disabled = is_problem(await client.post("/api/replay", json=body, headers=auth), 409)
    assert "replay_config" in disabled["detail"]
    assert (await client.get("/api/info")).json() == {
        "sink": "inspector",
        "max_events": 3,
        "replay_enabled": False,
        "replay_sinks": [],
    }


def write_replay_config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    consumers = {
        "group": "g",
        "topics": ["webhooks.raw"],
        "dlq_topic": "webhooks.dlq",
        "sinks": {
            "events_file": {"type": "file", "path": str(tmp_path / "e.jsonl")},
            "page": {"type": "inspector", "port": 0},
        },
        "routes": [{"name": "all", "sinks": ["events_file", "page"]}],
    }
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                                    "consumers": consumers}))  # fmt: skip
    return path


async def test_replay_targets_come_from_the_config_without_inspectors(tmp_path: Path) -> None:
    path = write_replay_config(tmp_path)
    sink = InspectorSink("page", InspectorConfig(port=0, replay_config=path), context())
    await sink.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.port}") as client:
            info = (await client.get("/api/info")).json()
            assert (info["replay_enabled"], info["replay_sinks"]) == (True, ["events_file"])
            await sink.send(event(1))
            token = token_of((await client.get("/")).text)
            refused = await client.post(
                "/api/replay", json={"seq": 1, "sink": "page"}, headers={TOKEN_HEADER: token}
            )
            assert "not a replay target" in is_problem(refused, 400)["detail"]
    finally:
        await sink.aclose()


def test_replay_command_names_the_exact_record(tmp_path: Path) -> None:
    record = {"kafka": {"topic": "webhooks.raw", "partition": 4, "offset": 17}}
    argv = replay_argv(tmp_path / "c.yaml", record, "pg", ignore_routes=True)
    assert argv[1:] == [
        "-m", "consumers", "--log-format", "text", "replay", "--config", str(tmp_path / "c.yaml"),
        "--offsets", "4:17-17", "--topic", "webhooks.raw", "--sinks", "pg", "--ignore-routes",
    ]  # fmt: skip


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
