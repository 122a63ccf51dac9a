"""A sink that takes a fixed time per call (a slow HTTP API, say), for the slow-sink case.

Each delivery sleeps ``delay_ms`` and then appends ``<key> <offset>`` to ``path``, so the
harness can count deliveries and check that every key's offsets arrive in order. The
write is one ``O_APPEND`` syscall of a few bytes: negligible next to the delay.

Registered for the benchmark only, through a throw-away ``.dist-info`` on the consumer's
``PYTHONPATH`` (see :func:`bench.procs.plugin_path`), never in the product's entry points.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import StrictModel

ENTRY_POINT: str = "bench-slow = bench.apps.slow_sink:SlowSink"


class SlowSinkConfig(StrictModel):
    path: Path
    delay_ms: float = Field(default=20.0, ge=0)


class SlowSink:
    Config: ClassVar[type[SlowSinkConfig]] = SlowSinkConfig

    def __init__(self, name: str, config: SlowSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._fd: int | None = None

    async def start(self) -> None:
        self._fd = os.open(self.config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def send(self, event: Event) -> None:
        if self._fd is None:
            raise SinkError(f"bench sink {self.name!r} is not started", retriable=True)
        await asyncio.sleep(self.config.delay_ms / 1000)
        os.write(self._fd, f"{event.key} {event.offset}\n".encode())

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
