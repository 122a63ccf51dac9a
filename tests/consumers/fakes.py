"""Fakes for unit tests of the consumers: sinks that record, stall or fail on demand, a
DLQ producer, a Kafka consumer over records held in memory, and records to feed them."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, OffsetAndTimestamp
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from consumers.config import RetryConfig
from consumers.dedup import DedupStore, MemoryDedupStore
from consumers.delivery import Deliverer
from consumers.dlq import REASON_PERMANENT, DeadLetterWriter, dead_letter_headers
from consumers.event import Event
from consumers.metrics import ConsumerMetrics
from consumers.record import SourceRecord, make_item
from consumers.retry import SinkRetry
from consumers.sinks import Sink, SinkError
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
    """Records what it is asked to produce; ``fail_times`` first sends fail (retriable),
    and a value longer than ``max_bytes`` is refused as the broker refuses a record over
    the topic's ``max.message.bytes``."""

    def __init__(self, fail_times: int = 0, *, max_bytes: int | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_times = fail_times
        self.max_bytes = max_bytes
        self.refused = 0

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise SinkError("broker away")
        if self.max_bytes is not None and len(value or b"") > self.max_bytes:
            self.refused += 1
            raise MessageSizeTooLargeError(f"{len(value or b'')} bytes")
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})


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
    item = make_item(record(offset, key, **kw))
    assert item.event is not None, item.error
    return item.event


def fresh_registry() -> CollectorRegistry:
    return CollectorRegistry()


def deliverer(
    sinks: Iterable[FakeSink],
    metrics: ConsumerMetrics,
    *,
    dlq: FakeProducer | None = None,
    dedup: DedupStore | None = None,
) -> Deliverer:
    """A deliverer to ``sinks`` with fast retries and a memory dedup store (unless
    given); dead letters go to ``dlq`` (topic "dlq"), none without one (as in replay)."""
    by_name: dict[str, Sink] = {sink.name: sink for sink in sinks}
    return Deliverer(
        by_name,
        dedup if dedup is not None else MemoryDedupStore(3600, 10_000),
        {name: SinkRetry(RetryConfig(initial_ms=1, max_ms=2)) for name in by_name},
        metrics,
        DeadLetterWriter(dlq, "dlq", "g") if dlq is not None else None,
    )


def consumer_record(rec: SourceRecord, *, timestamp_ms: int = 0) -> ConsumerRecord[bytes, bytes]:
    """``rec`` as aiokafka hands it out."""
    return ConsumerRecord(
        rec.topic,
        rec.partition,
        rec.offset,
        timestamp_ms,
        0,
        rec.key,
        rec.value,
        None,
        len(rec.key or b""),
        len(rec.value or b""),
        list(rec.headers),
    )


def dead_letter(
    rec: SourceRecord,
    offset: int,
    *,
    reason: str = REASON_PERMANENT,
    sink: str = "s",
    topic: str = "dlq",
    partition: int = 0,
) -> ConsumerRecord[bytes, bytes]:
    """The record of the dead-letter topic (at ``offset``) that the engine writes when
    ``rec`` fails in ``sink``."""
    headers = dead_letter_headers(
        rec, reason=reason, sink=sink, attempts=1, error="boom", group="g", now=1_700_000_000.0
    )
    held = SourceRecord(topic, partition, offset, rec.key, rec.value, tuple(headers))
    return consumer_record(held)


class FakeConsumer:
    """An aiokafka consumer over records held in memory, answering like aiokafka.

    ``subscribe`` then ``start`` joins a group of one: every partition held is assigned
    through the rebalance listener. ``assign`` and ``seek`` read chosen partitions. The
    fetch (``getmany``) returns nothing from a paused partition, at most
    ``max_records``, and waits ``timeout_ms`` when it has nothing. ``ends`` sets a
    partition's end offset past its last record (transaction markers, compaction).
    """

    def __init__(
        self,
        records: Iterable[ConsumerRecord[bytes, bytes]],
        *,
        ends: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self._logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for rec in records:
            self._logs.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        for log in self._logs.values():
            log.sort(key=lambda r: r.offset)
        self._ends = dict(ends or {})
        self._positions: dict[TopicPartition, int] = {}
        self._assigned: list[TopicPartition] = []
        self._paused: set[TopicPartition] = set()
        self._listener: Any = None
        self.pause_calls = 0
        self.getmany_calls = 0
        self.committed: dict[TopicPartition, int] = {}
        self.started = False
        self.stopped = False

    # -- group membership ----------------------------------------------------------

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._listener = listener

    async def start(self) -> None:
        self.started = True
        if self._listener is not None:
            self.assign(sorted(self._logs))
            await self._listener.on_partitions_assigned(list(self._assigned))

    async def stop(self) -> None:
        self.stopped = True

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    # -- metadata ------------------------------------------------------------------

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {tp.partition for tp in self._logs if tp.topic == topic} or None

    def _begin(self, tp: TopicPartition) -> int:
        log = self._logs.get(tp)
        first: int = log[0].offset if log else self._ends.get(tp, 0)
        return first

    def highwater(self, tp: TopicPartition) -> int:
        log = self._logs.get(tp)
        end: int = self._ends.get(tp, log[-1].offset + 1 if log else 0)
        return end

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._begin(tp) for tp in tps}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.highwater(tp) for tp in tps}

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ts in timestamps.items():
            found = [r for r in self._logs.get(tp, []) if r.timestamp >= ts]
            out[tp] = OffsetAndTimestamp(found[0].offset, found[0].timestamp) if found else None
        return out

    # -- reading -------------------------------------------------------------------

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        self._assigned = list(tps)
        for tp in self._assigned:
            self._positions.setdefault(tp, self._begin(tp))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *tps: TopicPartition) -> None:
        self.pause_calls += 1
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self.getmany_calls += 1
        limit = max_records or 500
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for tp in tps or self._assigned:
            if tp in self._paused or limit <= 0:
                continue
            log = self._logs.get(tp, [])
            start = bisect.bisect_left(log, self._positions[tp], key=lambda r: r.offset)
            taken = log[start : start + limit]
            if taken:
                out[tp] = taken
                limit -= len(taken)
                self._positions[tp] = taken[-1].offset + 1
            if start + len(taken) == len(log):
                # Read to the end: the position moves past what follows the last record.
                self._positions[tp] = max(self._positions[tp], self.highwater(tp))
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out
