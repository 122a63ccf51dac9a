"""Fakes for unit tests of the engine: sinks that record, stall or fail on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from consumers.dlq import SourceRecord
from consumers.event import Event
from consumers.sinks import SinkError
from webhook_common.contract import EventMeta, format_time


class FakeSinkConfig(BaseModel):
    pass


class FakeSink:
    """Records what it received; ``delay`` stalls each call, ``fail`` decides errors."""

    Config: ClassVar[type[BaseModel]] = FakeSinkConfig

    def __init__(
        self,
        name: str = "fake",
        *,
        delay: float = 0.0,
        fail: Callable[[Event, int], BaseException | None] | None = None,
    ) -> None:
        self.name = name
        self.delay = delay
        self.fail = fail
        self.received: list[Event] = []
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.active_keys: set[str] = set()
        self.overlapping_same_key = 0

    async def start(self) -> None:
        return None

    async def send(self, event: Event) -> None:
        self.calls += 1
        if event.key in self.active_keys:
            self.overlapping_same_key += 1
        self.active_keys.add(event.key)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail is not None and (exc := self.fail(event, self.calls)) is not None:
                raise exc
            self.received.append(event)
        finally:
            self.active -= 1
            self.active_keys.discard(event.key)

    async def aclose(self) -> None:
        return None


class FakeProducer:
    def __init__(self, fail_times: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_times = fail_times

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any
    ) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise SinkError("broker away")
        self.sent.append({"topic": topic, "value": value, "key": key, **kw})


def record(
    offset: int,
    key: str = "k",
    *,
    event_id: str | None = None,
    topic: str = "raw",
    partition: int = 0,
    type_: str = "order.created",
    source: str = "crystallize",
    body: bytes = b'{"a": 1}',
    headers: dict[str, str] | None = None,
) -> SourceRecord:
    meta = EventMeta(
        id=event_id or f"ev-{partition}-{offset}",
        source=source,
        type=type_,
        time=format_time(1_700_000_000.0),
        subject=key,
        http_headers=headers or {},
    )
    return SourceRecord(topic, partition, offset, key.encode(), body, tuple(meta.to_headers()))


def event(offset: int = 0, key: str = "k", **kw: Any) -> Event:
    r = record(offset, key, **kw)
    return Event.from_record(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        headers=r.headers,
    )


def fresh_registry() -> CollectorRegistry:
    return CollectorRegistry()
