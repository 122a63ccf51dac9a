"""The event a sink receives: one Kafka record read through the contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook_common.contract import EventMeta

_UNPARSED: Any = object()


@dataclass(slots=True)
class Event:
    """One webhook event.

    ``body`` is the raw request body, byte for byte; :meth:`json` parses it lazily (once)
    with orjson. ``topic``/``partition``/``offset`` locate the record in Kafka.
    """

    id: str
    source: str
    type: str
    key: str
    time: str
    headers: Mapping[str, str]
    body: bytes
    topic: str
    partition: int
    offset: int
    content_type: str = "application/json"
    method: str = "POST"
    query: str = ""
    _parsed: Any = field(default=_UNPARSED, repr=False, compare=False)

    @classmethod
    def from_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
    ) -> Event:
        """Build from a consumed record; raises ContractError if headers break the contract."""
        meta = EventMeta.from_headers(headers)
        return cls(
            id=meta.id,
            source=meta.source,
            type=meta.type,
            key=key.decode("utf-8", "replace") if key is not None else meta.subject,
            time=meta.time,
            headers=dict(meta.http_headers),
            body=value or b"",
            topic=topic,
            partition=partition,
            offset=offset,
            content_type=meta.content_type,
            method=meta.method,
            query=meta.query,
        )

    def json(self) -> Any:
        """The body parsed as JSON (cached). Raises ``orjson.JSONDecodeError`` if it is not."""
        if self._parsed is _UNPARSED:
            self._parsed = orjson.loads(self.body)
        return self._parsed

    def body_for_display(self) -> Any:
        """The parsed body when it is JSON, else the raw text (for JSONL and inspectors)."""
        try:
            return self.json()
        except orjson.JSONDecodeError:
            return self.body.decode("utf-8", "replace")

    def meta(self) -> EventMeta:
        """The contract metadata, e.g. to republish the record with the same headers."""
        return EventMeta(
            id=self.id,
            source=self.source,
            type=self.type,
            time=self.time,
            subject=self.key,
            content_type=self.content_type,
            method=self.method,
            query=self.query,
            http_headers=dict(self.headers),
        )
