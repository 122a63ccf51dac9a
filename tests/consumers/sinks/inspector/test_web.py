"""The inspector's web app on a real loopback port: page, events, stream, errors."""

from __future__ import annotations

import asyncio
import re

from consumers.sinks.inspector.web import page_template
from tests.consumers.sinks.inspector.support import Started, event, is_problem, read_sse, token_of


def test_the_page_ships_in_the_package() -> None:
    page = page_template()
    for placeholder in ("__NONCE__", "__TOKEN__", "__SINK__"):
        assert placeholder in page


async def test_page_is_served_with_token_nonce_and_csp(started: Started) -> None:
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
    again = await client.get("/")
    assert token_of(again.text) == token_of(page)  # one token per process
    assert again.headers["content-security-policy"] != csp  # a nonce per page


async def test_keeps_the_last_max_events_and_filters(started: Started) -> None:
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


async def test_stream_sends_backlog_then_live_events_and_resumes(started: Started) -> None:
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


async def test_unknown_path_and_method_are_problems(started: Started) -> None:
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
