"""The ``inspector`` sink: a live web page of the latest events, for development.

Route events to it like to any sink; it keeps the last ``max_events`` in memory and
serves, inside the consumer process, one HTML page on ``host:port`` (loopback by
default). The page lists events as they arrive (server-sent events): source, type,
key, time, headers and the pretty-printed body, filtered by source, type and key. Its
Replay button delivers an event again to another sink of the consumer by running
``python -m consumers replay`` for that one Kafka record.

Webhook bodies carry personal data, and the replay endpoint starts a process, so: the
default bind is 127.0.0.1, requests must name an allowed ``Host`` (DNS rebinding), and
replays need a per-process token that only the served page carries. Bound to any
other address, every request must carry the configured ``access_token``.

Only the partitions assigned to this consumer process reach its inspector; with
several consumers in a group, each shows its share.

The pieces: :mod:`.buffer` (the kept events and their live fan-out), :mod:`.web` (the
page and its API), :mod:`.replay` (the replay command), :mod:`.hostguard` (the
``Host`` allow-list), :mod:`.metrics`.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from consumers.sinks.inspector.buffer import EventBuffer
from consumers.sinks.inspector.hostguard import HostAllowList, is_loopback
from consumers.sinks.inspector.metrics import InspectorMetrics, inspector_metrics
from consumers.sinks.inspector.replay import ReplayLauncher, replay_config_path, replay_targets
from consumers.sinks.inspector.web import PageServer, build_app
from webhook_common.config import ConfigPath, StrictModel

__all__ = ["InspectorConfig", "InspectorSink"]

log = logging.getLogger(__name__)


class InspectorConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    max_events: int = Field(default=500, ge=1, le=100_000)
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1, le=16 * 1024 * 1024, description="longer bodies are cut"
    )
    replay_config: ConfigPath | None = Field(
        default=None,
        description="config file replays run with (default: the one the consumer runs on)",
    )
    replay_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    allowed_hosts: list[str] = Field(
        default_factory=list, description="extra Host names accepted (when not on loopback)"
    )
    access_token: SecretStr | None = Field(
        default=None,
        description="required on every request when host is not a loopback address",
    )

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Self:
        # Off loopback anyone who can reach the port could read every webhook body.
        if not is_loopback(self.host) and self.access_token is None:
            raise ValueError(f"an access_token, since host {self.host!r} is not a loopback address")
        if self.access_token is not None and len(self.access_token.get_secret_value()) < 16:
            raise ValueError("an access_token of at least 16 characters")
        return self


class InspectorSink:
    """Keeps the last events and serves them live; see the package docstring."""

    Config: ClassVar[type[InspectorConfig]] = InspectorConfig

    def __init__(self, name: str, config: InspectorConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._context = context
        self._metrics: InspectorMetrics = inspector_metrics(context.registry)
        self._buffer = EventBuffer(config.max_events, config.max_body_bytes)
        self._hosts = HostAllowList(config.host, config.allowed_hosts)
        self._server = PageServer(name, config.host, config.port)
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port once started (config ``port: 0``: whichever was free)."""
        return self._server.port

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"inspector sink {self.name!r} is closed", retriable=False)
        if self._server.running:
            return
        replay = ReplayLauncher(
            replay_config_path(self.name, self.config.replay_config, self._context.config_path),
            replay_targets(self._context.sink_types),
            self.config.replay_timeout_seconds,
        )
        token = self.config.access_token
        app = build_app(
            self.name,
            self._buffer,
            self._hosts,
            replay,
            self._metrics,
            access_token=None if token is None else token.get_secret_value(),
        )
        self._server.start(app)
        log.info("inspector %s: http://%s/", self.name, self._server.netloc)

    async def send(self, event: Event) -> None:
        if self._closed:
            raise SinkError(f"inspector sink {self.name!r} is closed", retriable=True)
        self._buffer.add(event)

    async def aclose(self) -> None:
        self._closed = True
        self._buffer.close()
        await self._server.stop()
