"""The ``file`` sink: one JSON object per line (JSONL), appended to a local file.

Durability (``fsync``), since the consumer marks an event delivered and commits its
offset as soon as ``send`` returns:

* ``always`` (default) — ``send`` returns after the line is written *and* fsynced:
  the line survives a crash of the process, the kernel or the power.
* ``batch`` — ``send`` returns after the line is written to the operating system (it
  survives a crash of the consumer, e.g. SIGKILL); fsync runs at most every
  ``fsync_interval_seconds`` and on close, so a kernel crash or power loss can lose
  the lines of that window although their offsets are committed.
* ``never`` — like ``batch`` but never fsynced; the kernel writes back when it likes.

Throughput: one writer task owns the file. Lines queue up while it writes, so each
write and each fsync carries every line that arrived meanwhile ("group commit"); the
blocking calls run in a worker thread, never on the event loop. The file is opened
with ``O_APPEND`` and each batch is one ``write``, so several consumer processes may
append to one local file without interleaving lines.

Delivery is at-least-once: after a failed write the event is retried and its line may
appear twice (readers deduplicate on ``id``); after a write that failed half-way the
next write starts on a new line, so a torn fragment is one unparseable line.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import StrictModel

_MAX_BATCH_BYTES = 4 * 1024 * 1024


class FileSinkConfig(StrictModel):
    path: Path = Field(description="the JSONL file; parent directories are created")
    fsync: Literal["always", "batch", "never"] = "always"
    fsync_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    mode: int = Field(default=0o640, ge=0, le=0o777, description="permissions of a new file")


def event_line(event: Event) -> bytes:
    """The JSONL line for one event, newline included."""
    record: dict[str, Any] = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "key": event.key,
        "time": event.time,
        "content_type": event.content_type,
        "headers": dict(event.headers),
        "body": event.body_for_display(),
        "kafka": {"topic": event.topic, "partition": event.partition, "offset": event.offset},
    }
    return orjson.dumps(record) + b"\n"


class FileSink:
    """Appends events as JSON lines; see the module docstring for durability."""

    Config: ClassVar[type[FileSinkConfig]] = FileSinkConfig

    def __init__(self, name: str, config: FileSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._fd: int | None = None
        self._pending: deque[tuple[bytes, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._torn = False  # the last write stopped mid-line
        self._dirty = False  # written but not fsynced (batch mode)
        self._last_fsync = time.monotonic()

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"file sink {self.name!r} is closed", retriable=True)
        if self._fd is not None:
            return
        try:
            self._fd = await asyncio.to_thread(self._open)
        except OSError as exc:
            raise SinkError(self._describe(exc, "open"), retriable=True) from exc
        self._writer = asyncio.create_task(self._write_loop(), name=f"file-sink-{self.name}")

    def _open(self) -> int:
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        return os.open(self.config.path, flags, self.config.mode)

    def _describe(self, exc: OSError, action: str) -> str:
        reason = exc.strerror or type(exc).__name__
        return f"file sink {self.name!r}: cannot {action} {str(self.config.path)!r}: {reason}"

    async def send(self, event: Event) -> None:
        await self._enqueue([event_line(event)])

    async def send_batch(self, events: Sequence[Event]) -> None:
        await self._enqueue([event_line(e) for e in events])

    async def _enqueue(self, lines: list[bytes]) -> None:
        if self._closed or self._writer is None:
            state = "closed" if self._closed else "not started"
            raise SinkError(f"file sink {self.name!r} is {state}", retriable=True)
        # One future for all lines: they go into one write, so they succeed or fail together.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((b"".join(lines), done))
        self._wake.set()
        await done

    async def _write_loop(self) -> None:
        while True:
            timeout = None
            if self._dirty:
                elapsed = time.monotonic() - self._last_fsync
                timeout = max(0.0, self.config.fsync_interval_seconds - elapsed)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                await self._periodic_fsync()
                continue
            self._wake.clear()
            while self._pending:
                await self._write_some()
            if self._closed:
                return

    async def _write_some(self) -> None:
        batch: list[tuple[bytes, asyncio.Future[None]]] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= _MAX_BATCH_BYTES):
            item = self._pending.popleft()
            batch.append(item)
            size += len(item[0])
        data = b"".join(chunk for chunk, _ in batch)
        if self._torn:
            data = b"\n" + data
        try:
            await asyncio.to_thread(self._write_blocking, data, self.config.fsync == "always")
            error: SinkError | None = None
        except OSError as exc:
            error = SinkError(self._describe(exc, "write to"), retriable=True)
        except Exception as exc:  # never leave callers waiting on a dead writer
            error = SinkError(f"file sink {self.name!r}: {type(exc).__name__}: {exc}")
        for _, done in batch:
            if done.done():  # the caller was cancelled
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def _write_blocking(self, data: bytes, fsync: bool) -> None:
        assert self._fd is not None
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError:
            self._torn = self._torn or written > 0
            raise
        self._torn = False
        self._dirty = True
        if fsync:
            os.fsync(self._fd)
            self._dirty = False
            self._last_fsync = time.monotonic()

    async def _periodic_fsync(self) -> None:
        if self.config.fsync != "batch" or self._fd is None:
            self._dirty = False
            return
        fd = self._fd
        try:
            await asyncio.to_thread(os.fsync, fd)
        except OSError:
            pass  # the lines were acknowledged already; the next interval tries again
        else:
            self._dirty = False
        self._last_fsync = time.monotonic()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            await self._writer  # writes what is queued, so no caller is left waiting
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                if self.config.fsync != "never":
                    await asyncio.to_thread(os.fsync, fd)
            except OSError as exc:
                raise SinkError(self._describe(exc, "fsync"), retriable=True) from None
            finally:
                os.close(fd)
