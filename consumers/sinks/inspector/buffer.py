"""The inspector's memory: the last events as the page shows them, and their fan-out to
the pages that follow the live stream (server-sent events).

Each event becomes a *record*: a JSON-ready dict with a ``seq`` number (1, 2, ... in
arrival order) that is also the stream's event id, so a reconnecting ``EventSource``
(which sends ``Last-Event-ID``) gets exactly what it missed while the buffer still has
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from consumers.event import Event

Record = dict[str, Any]

SUBSCRIBER_QUEUE = 1000  # events a slow page may lag behind before it is dropped
HEARTBEAT_SECONDS = 15.0  # a comment line this often keeps proxies from closing the stream
FILTER_FIELDS = ("source", "type", "key")


def display_body(event: Event, limit: int) -> tuple[str, bool]:
    """The body as the page shows it: indented JSON when it parses, else text; cut at
    ``limit`` bytes. Returns ``(text, truncated)``."""
    raw = event.body
    truncated = len(raw) > limit
    if not truncated:
        try:
            return orjson.dumps(event.json(), option=orjson.OPT_INDENT_2).decode(), False
        except orjson.JSONDecodeError:
            pass
    return raw[:limit].decode("utf-8", "replace"), truncated


def to_record(seq: int, event: Event, max_body_bytes: int) -> Record:
    body, truncated = display_body(event, max_body_bytes)
    return {
        "seq": seq,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "key": event.key,
        "time": event.time,
        "method": event.method,
        "query": event.query,
        "content_type": event.content_type,
        "headers": dict(event.headers),
        "body": body,
        "body_bytes": len(event.body),
        "body_truncated": truncated,
        "kafka": {"topic": event.topic, "partition": event.partition, "offset": event.offset},
        "inspected_at": time.time(),
    }


def sse_frame(record: Record) -> bytes:
    return b"id: %d\nevent: webhook\ndata: %b\n\n" % (record["seq"], orjson.dumps(record))


class EventBuffer:
    """The last ``max_events`` records, and one queue per open stream."""

    def __init__(
        self,
        max_events: int,
        max_body_bytes: int,
        *,
        subscriber_queue: int = SUBSCRIBER_QUEUE,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.max_events = max_events
        self._max_body_bytes = max_body_bytes
        self._subscriber_queue = subscriber_queue
        self._heartbeat_seconds = heartbeat_seconds
        self._records: deque[Record] = deque(maxlen=max_events)
        self._by_seq: dict[int, Record] = {}
        self._seq = 0
        self._subscribers: set[asyncio.Queue[Record | None]] = set()
        self._closed = False

    def add(self, event: Event) -> Record:
        """Keep ``event`` (dropping the oldest beyond ``max_events``) and hand it to every
        open stream."""
        self._seq += 1
        record = to_record(self._seq, event, self._max_body_bytes)
        if len(self._records) == self._records.maxlen:
            self._by_seq.pop(self._records[0]["seq"], None)
        self._records.append(record)
        self._by_seq[record["seq"]] = record
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                # The page stopped reading: drop it rather than hold up delivery; its
                # EventSource reconnects and catches up from Last-Event-ID.
                self._subscribers.discard(queue)
        return record

    def get(self, seq: int) -> Record | None:
        return self._by_seq.get(seq)

    def select(self, wanted: Mapping[str, str]) -> list[Record]:
        """The kept records, oldest first, whose fields equal every ``wanted`` value."""
        return [r for r in self._records if all(r[k] == v for k, v in wanted.items())]

    async def stream(self, after: int) -> AsyncGenerator[bytes, None]:
        """Server-sent events: the kept records after ``after``, then each new one,
        until :meth:`close` (or the page falls too far behind)."""
        queue: asyncio.Queue[Record | None] = asyncio.Queue(self._subscriber_queue)
        # Subscribe before taking the backlog, so nothing falls between the two; a
        # record in both is sent once. ``sent`` starts at 0, not ``after``: a page that
        # followed an earlier process of this consumer sends that process's (higher)
        # Last-Event-ID, and must still get the new events.
        self._subscribers.add(queue)
        backlog = [r for r in self._records if r["seq"] > after]
        sent = 0
        try:
            yield b"retry: 1000\n\n"
            for record in backlog:
                sent = record["seq"]
                yield sse_frame(record)
            while not self._closed:
                try:
                    item = await asyncio.wait_for(queue.get(), self._heartbeat_seconds)
                except TimeoutError:
                    if queue not in self._subscribers:
                        return  # dropped as too slow: end, the page reconnects
                    yield b": keep-alive\n\n"
                    continue
                if item is None:
                    return
                if item["seq"] > sent:
                    sent = item["seq"]
                    yield sse_frame(item)
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every open stream; later ones end at once."""
        self._closed = True
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()
