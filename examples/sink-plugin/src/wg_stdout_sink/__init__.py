"""``stdout-json``: an example webhook-gateway sink writing one JSON line per event.

What every sink plugin needs, in order of appearance:

1. a pydantic ``Config`` model that forbids unknown keys (so typos in YAML fail);
2. ``__init__(name, config, context)`` that does no I/O;
3. ``async start()`` / ``async send(event)`` / ``async aclose()``; ``send`` returns only
   once the event is delivered, because the consumer then marks it done;
4. failures raised as ``SinkError`` with ``retriable`` saying whether trying again can
   help (``send`` after ``aclose`` is retriable: the event is redelivered after restart).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Literal, TextIO

import orjson
from pydantic import BaseModel, ConfigDict, Field

from consumers.sinks import Event, SinkContext, SinkError

__all__ = ["StdoutJsonConfig", "StdoutJsonSink"]

FieldName = Literal["id", "source", "type", "key", "time", "headers", "body", "kafka"]
DEFAULT_FIELDS: tuple[FieldName, ...] = ("id", "source", "type", "key", "time")


class StdoutJsonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: Literal["stdout", "stderr"] = "stdout"
    fields: list[FieldName] = Field(default_factory=lambda: list(DEFAULT_FIELDS), min_length=1)


class StdoutJsonSink:
    """Writes the selected fields of each event as one JSON line."""

    Config: ClassVar[type[StdoutJsonConfig]] = StdoutJsonConfig

    def __init__(self, name: str, config: StdoutJsonConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._open = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"stdout-json sink {self.name!r} is closed", retriable=True)
        self._open = True

    def _stream(self) -> TextIO:
        # Looked up per call, not at import, so redirections (and pytest) take effect.
        return sys.stdout if self.config.stream == "stdout" else sys.stderr

    def _record(self, event: Event) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "key": event.key,
            "time": event.time,
            "headers": dict(event.headers),
            "body": event.body_for_display(),
            "kafka": {"topic": event.topic, "partition": event.partition, "offset": event.offset},
        }
        return {name: values[name] for name in self.config.fields}

    async def send(self, event: Event) -> None:
        if not self._open:
            state = "closed" if self._closed else "not started"
            raise SinkError(f"stdout-json sink {self.name!r} is {state}", retriable=True)
        line = orjson.dumps(self._record(event)).decode() + "\n"
        stream = self._stream()
        try:
            # One short write per event; a terminal or pipe takes it without blocking
            # for long. A sink with slow I/O would use a thread or an async client.
            stream.write(line)
            stream.flush()
        except BrokenPipeError:
            raise SinkError(
                f"stdout-json sink {self.name!r}: the reader of {self.config.stream} has gone",
                retriable=False,
            ) from None
        except OSError as exc:
            raise SinkError(
                f"stdout-json sink {self.name!r}: cannot write to {self.config.stream}: {exc}",
                retriable=True,
            ) from None

    async def aclose(self) -> None:
        self._open = False
        self._closed = True
