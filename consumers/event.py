"""The event a sink receives: one Kafka record read through the contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook_common.contract import (
    DEFAULT_CONTENT_TYPE,
    H_CONTENT_TYPE,
    H_ID,
    H_ID_ORIGIN,
    H_METHOD,
    H_PROVIDER_ID,
    H_QUERY,
    H_SOURCE,
    H_SUBJECT,
    H_TIME,
    H_TRACEPARENT,
    H_TRACESTATE,
    H_TYPE,
    EventMeta,
    IdOrigin,
    parse_id_origin,
    read_headers,
)

__all__ = [
    "Event",
]

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
    # Where ``id`` comes from (webhook_common.contract.IdOrigin) and, when ``id`` is not
    # the provider's own delivery id, that id.
    id_origin: IdOrigin = IdOrigin.PROVIDER
    provider_id: str = ""
    # The W3C trace context the gateway wrote (``ce_traceparent``, ``ce_tracestate``),
    # as read: webhook_common.tracing checks it before using it.
    traceparent: str = ""
    tracestate: str = ""
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
        # The same fields as EventMeta.from_headers, without building an EventMeta (a
        # frozen dataclass costs microseconds per record); the dicts are fresh ones.
        values, http_headers = read_headers(headers)
        return cls(
            id=values[H_ID],
            source=values[H_SOURCE],
            type=values[H_TYPE],
            key=key.decode("utf-8", "replace") if key is not None else values.get(H_SUBJECT, ""),
            time=values[H_TIME],
            headers=http_headers,
            body=value or b"",
            topic=topic,
            partition=partition,
            offset=offset,
            content_type=values.get(H_CONTENT_TYPE) or DEFAULT_CONTENT_TYPE,
            method=values.get(H_METHOD) or "POST",
            query=values.get(H_QUERY, ""),
            id_origin=parse_id_origin(values.get(H_ID_ORIGIN)),
            provider_id=values.get(H_PROVIDER_ID, ""),
            traceparent=values.get(H_TRACEPARENT, ""),
            tracestate=values.get(H_TRACESTATE, ""),
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
            id_origin=self.id_origin,
            provider_id=self.provider_id,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
        )
