"""The inspector's buffer: the kept records, the body as shown, the live fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from consumers.sinks.inspector.buffer import EventBuffer, display_body
from tests.consumers.sinks.inspector.support import event


async def frames(stream: AsyncIterator[bytes], count: int) -> list[dict[str, Any]]:
    """The next ``count`` webhook records of a stream (comments and retry skipped)."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for chunk in stream:
            if chunk.startswith(b"id: "):
                data = chunk.split(b"\ndata: ", 1)[1]
                found.append(orjson.loads(data))
                if len(found) == count:
                    break
    return found


def test_keeps_the_last_max_events_and_forgets_the_dropped() -> None:
    buffer = EventBuffer(max_events=2, max_body_bytes=1024)
    first = buffer.add(event(1))
    buffer.add(event(2))
    buffer.add(event(3))
    assert [r["id"] for r in buffer.select({})] == ["e2", "e3"]
    assert buffer.get(first["seq"]) is None
    assert [buffer.get(n)["id"] for n in (2, 3)] == ["e2", "e3"]  # type: ignore[index]


def test_select_matches_every_wanted_field() -> None:
    buffer = EventBuffer(max_events=10, max_body_bytes=1024)
    buffer.add(event(1))
    buffer.add(event(2, source="github", type_="push"))
    buffer.add(event(3, key="k2"))
    assert [r["id"] for r in buffer.select({"source": "crystallize"})] == ["e1", "e3"]
    assert [r["id"] for r in buffer.select({"type": "order", "key": "k2"})] == ["e3"]
    assert buffer.select({"key": "none"}) == []


def test_body_display_raw_and_truncated() -> None:
    assert display_body(event(1, body=b"not json at all"), 8) == ("not json", True)
    assert display_body(event(2, body=b"\xff\xfe{}"), 8) == ("\ufffd\ufffd{}", False)
    assert display_body(event(3, body=b'{"a":[1]}'), 100) == ('{\n  "a": [\n    1\n  ]\n}', False)
    record = EventBuffer(max_events=1, max_body_bytes=8).add(event(4, body=b"not json at all"))
    assert (record["body"], record["body_truncated"], record["body_bytes"]) == (
        "not json",
        True,
        15,
    )


async def test_stream_sends_the_backlog_then_each_new_record_once() -> None:
    buffer = EventBuffer(max_events=10, max_body_bytes=1024)
    buffer.add(event(1))
    buffer.add(event(2))
    stream = buffer.stream(after=1)
    assert await anext(stream) == b"retry: 1000\n\n"
    # Added while the stream sends its backlog: it follows the backlog, once.
    buffer.add(event(3))
    backlog = await frames(stream, 2)
    assert [r["id"] for r in backlog] == ["e2", "e3"]
    buffer.add(event(4))
    assert [r["id"] for r in await frames(stream, 1)] == ["e4"]
    buffer.close()
    assert [chunk async for chunk in stream] == []


async def test_a_page_that_does_not_read_is_dropped_and_add_never_waits() -> None:
    buffer = EventBuffer(max_events=10, max_body_bytes=1024, subscriber_queue=2,
                         heartbeat_seconds=0.05)  # fmt: skip
    stream = buffer.stream(after=0)
    await anext(stream)  # subscribed
    for n in range(1, 6):
        buffer.add(event(n))  # the third overflows the queue: the stream is dropped
    got = [chunk async for chunk in stream]  # what was queued, then the end
    assert [orjson.loads(c.split(b"\ndata: ", 1)[1])["id"] for c in got] == ["e1", "e2"]


async def test_an_idle_stream_sends_keep_alive_comments() -> None:
    buffer = EventBuffer(max_events=10, max_body_bytes=1024, heartbeat_seconds=0.01)
    stream = buffer.stream(after=0)
    assert await anext(stream) == b"retry: 1000\n\n"
    assert await anext(stream) == b": keep-alive\n\n"
    buffer.close()
    await stream.aclose()


async def test_a_stream_opened_after_close_ends_after_its_backlog() -> None:
    buffer = EventBuffer(max_events=10, max_body_bytes=1024)
    buffer.add(event(1))
    buffer.close()
    chunks = [chunk async for chunk in buffer.stream(after=0)]
    assert len(chunks) == 2  # retry, e1
