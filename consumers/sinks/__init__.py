"""Sinks: where consumers deliver events. Swappable, so a subpackage.

A sink is a class registered under the entry-point group ``webhook_gateway.sinks``.
Built-in sinks (``file``, ``http``, ``kafka``, ``postgres``, ``log``) register through
the same group as third-party plugins, see ``pyproject.toml``. The class has a pydantic
``Config`` model for its YAML section and is built once at startup as
``cls(name, config, context)``.

Errors: raise :class:`SinkError` with ``retriable`` set to say whether the consumer
should back off and try again (timeouts, 429, 5xx) or dead-letter at once (a 4xx, a
body the target will never accept). Any other exception is treated as retriable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from consumers.config import DEFAULT_MAX_RECORD_BYTES
from consumers.event import Event
from webhook_common.config import ConfigPath
from webhook_common.errors import WebhookGatewayError

__all__ = [
    "ENTRY_POINT_GROUP",
    "BatchSink",
    "ConfigPath",
    "Event",
    "Sink",
    "SinkContext",
    "SinkError",
]

ENTRY_POINT_GROUP = "webhook_gateway.sinks"


class SinkError(WebhookGatewayError):
    """A delivery failed. ``retriable`` decides between backoff and the DLQ."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may use besides its own config.

    ``config_path`` and ``sink_types`` describe the configuration the consumer runs on,
    for a sink that starts ``python -m consumers`` itself (the inspector's replay); a
    context built without a config file (a test, an embedding program) has ``None`` and
    no sinks. ``max_record_bytes`` is ``consumers.max_record_bytes``: the largest record
    the consumed topics hold, which a sink that writes records to Kafka must accept.
    """

    kafka_bootstrap_servers: str
    kafka_client_kwargs: dict[str, object]
    registry: CollectorRegistry
    # The YAML file, absolute: relative paths in sink options are taken from its directory.
    config_path: Path | None = None
    sink_types: Mapping[str, str] = field(default_factory=dict)  # every sink: name -> type
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


@runtime_checkable
class Sink(Protocol):
    """The sink plugin interface.

    ``send`` delivers one event and returns only when the target has it (durably, as far
    as the target promises): the consumer writes the dedup mark and commits the offset
    after it returns. ``send`` is called for one key at a time in offset order, but for
    different keys concurrently. ``start`` opens connections; ``aclose`` flushes and
    releases them.
    """

    Config: ClassVar[type[BaseModel]]
    name: str

    def __init__(self, name: str, config: BaseModel, context: SinkContext) -> None: ...

    async def start(self) -> None: ...

    async def send(self, event: Event) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchSink(Sink, Protocol):
    """Optional: a sink that can deliver several events (of different keys) at once."""

    async def send_batch(self, events: Sequence[Event]) -> None: ...
