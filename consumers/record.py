"""A consumed record, and the work item it becomes: the record read through the contract.

Both the live consumer (``run``) and ``replay`` turn each record they read into a
:class:`WorkItem` with :func:`make_item`; a record that breaks the contract becomes an
item without an event, so it can be dead-lettered rather than lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.event import Event
from webhook_common.errors import ContractError

TP = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is such a tuple

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A consumed record, kept as read so it can be dead-lettered unchanged."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int = -1

    @classmethod
    def from_consumer_record(cls, record: Any) -> SourceRecord:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=_plain_headers(record.headers),
            timestamp_ms=record.timestamp if record.timestamp is not None else -1,
        )


def _plain_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """The headers as a tuple with ``None`` values as ``b""``. Once per consumed record:
    the common case (no ``None``) only copies the pairs, without rebuilding each one."""
    if not headers:
        return ()
    plain = tuple(headers)
    for _, value in plain:
        if value is None:
            return tuple((k, v or b"") for k, v in plain)
    return plain  # type: ignore[return-value]  # no None among the values


@dataclass(slots=True)
class WorkItem:
    record: SourceRecord
    event: Event | None  # None when the record breaks the contract
    error: str = ""

    @property
    def tp(self) -> TP:
        return (self.record.topic, self.record.partition)

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def timestamp_ms(self) -> int:
        return self.record.timestamp_ms

    @property
    def key(self) -> str:
        if self.event is not None:
            return self.event.key
        return (self.record.key or b"").decode("utf-8", "replace")


def make_item(record: SourceRecord) -> WorkItem:
    try:
        event = Event.from_record(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
        )
    except ContractError as exc:
        return WorkItem(record, None, str(exc))
    return WorkItem(record, event)
