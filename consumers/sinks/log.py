"""The ``log`` sink: one log line per event, for a terminal or a log pipeline.

The line names the event (id, source, type, key) and its Kafka coordinates, also as
structured fields (``event_id``, ``event_source``, ...) for the JSON log format. The
body is left out unless ``include_body`` is set, since webhook bodies often carry
personal data; it is then cut to ``max_body_chars``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import StrictModel

LOGGER = "consumers.sinks.log"


class LogSinkConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    include_body: bool = False
    max_body_chars: int = Field(default=2000, ge=1, le=1_000_000)


class LogSink:
    """Logs events through the ``consumers.sinks.log`` logger."""

    Config: ClassVar[type[LogSinkConfig]] = LogSinkConfig

    def __init__(self, name: str, config: LogSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._logger = logging.getLogger(LOGGER)
        self._level = logging.getLevelName(config.level)
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"log sink {self.name!r} is closed", retriable=True)

    async def send(self, event: Event) -> None:
        if self._closed:
            raise SinkError(f"log sink {self.name!r} is closed", retriable=True)
        fields: dict[str, Any] = {
            "sink": self.name,
            "event_id": event.id,
            "event_source": event.source,
            "event_type": event.type,
            "event_key": event.key,
            "kafka_topic": event.topic,
            "kafka_partition": event.partition,
            "kafka_offset": event.offset,
        }
        # %r: ids and keys come from outside; quoting keeps one event on one line.
        message = "event id=%r source=%r type=%r key=%r at %s/%d/%d"
        args: list[Any] = [
            event.id,
            event.source,
            event.type,
            event.key,
            event.topic,
            event.partition,
            event.offset,
        ]
        if self.config.include_body:
            body = orjson.dumps(event.body_for_display()).decode()
            if len(body) > self.config.max_body_chars:
                body = body[: self.config.max_body_chars] + "..."
            fields["event_body"] = body
            message += " body=%s"
            args.append(body)
        self._logger.log(self._level, message, *args, extra=fields)

    async def aclose(self) -> None:
        self._closed = True
