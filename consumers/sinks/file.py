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

Throughput: at most one blocking operation (a write with its fsync, or a periodic
fsync) runs at a time, in the sink's writer thread, never on the event loop. Lines queue up
while it runs, so each write and each fsync carries every line that arrived meanwhile
("group commit"), and the next write starts as soon as the previous one is done: the
thread writes one batch while the event loop prepares the next. The file is opened
with ``O_APPEND`` and each batch is one ``write``, so several consumer processes may
append to one local file without interleaving lines.

Crash recovery: the consumer writes an event's dedup mark only after ``send`` returned,
so a consumer killed between the two (SIGKILL, OOM, power) leaves lines in the file
whose events are not marked; after the restart the dedup store lets them through again.
The file itself knows better, so ``start`` reads the file's last ``recover_tail_bytes``
(whole lines only: a torn last line is skipped) and keeps the ids found there; ``send``
treats an event whose id is among them as already delivered and returns without writing
(counted in ``webhookgw_file_sink_already_written_total``). The window left open by a
crash is at most one event per delivery slot (``concurrency.max_parallel``) and those
lines are the last ones this process wrote, so the default 8 MiB covers it with a wide
margin, unless other processes append more than that to the same file before the
restart. When several consumer processes append to one file, a partition of a killed
process may move to a process that is already running: so before each write the sink
also reads what *other* processes appended since it last looked (one ``fstat`` per
batch when nobody else writes) and adds those ids. The set is bounded
(``_MAX_KNOWN_IDS``, oldest dropped first); it answers "does this file already hold
event X", so do not point two sink names at one file expecting a line each.

Delivery is otherwise at-least-once: after a failed write the event is retried and its
line may appear twice (readers deduplicate on ``id``); after a write that failed
half-way, or a file left ending in a fragment by a crash, the next write starts on a
new line, so a torn fragment is one unparseable line.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import ConfigPath, StrictModel

log = logging.getLogger(__name__)

_MAX_BATCH_BYTES = 4 * 1024 * 1024
_DEFAULT_TAIL = 8 * 1024 * 1024
# Ids remembered as "in the file"; far more than the lines a crash can leave unmarked.
_MAX_KNOWN_IDS = 200_000

Pending = tuple[list[tuple[str, bytes]], "asyncio.Future[None]"]
_Then = Callable[[BaseException | None], None]
_Job = tuple[Callable[..., None], tuple[Any, ...], _Then]


class FileSinkConfig(StrictModel):
    path: ConfigPath = Field(description="the JSONL file; parent directories are created")
    fsync: Literal["always", "batch", "never"] = "always"
    fsync_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    mode: int = Field(default=0o640, ge=0, le=0o777, description="permissions of a new file")
    recover_tail_bytes: int = Field(
        default=_DEFAULT_TAIL,
        ge=0,
        le=1024 * 1024 * 1024,
        description="how much of the file's end to read at start for ids already written (0: off)",
    )


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


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.recovered = Gauge(
            "webhookgw_file_sink_recovered_ids",
            "Event ids found in the file's tail when the sink started",
            ["sink"],
            registry=registry,
        )
        self.already_written = Counter(
            "webhookgw_file_sink_already_written",
            "Events not written again because the file's tail already held their id "
            "(written before a crash, not yet marked in the dedup store)",
            ["sink"],
            registry=registry,
        )


# One set of collectors per registry: several file sinks in one process share them
# (label ``sink``), and a test's fresh registry gets fresh ones.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _METRICS[registry] = _Metrics(registry)
    return found


def ids_in_tail(data: bytes, *, from_start: bool) -> set[str]:
    """The ``id`` of every complete JSON line in ``data``, the end of a JSONL file.

    Unless ``data`` starts at the beginning of the file its first line is a fragment, and
    unless it ends with a newline so is its last (a write cut short by a crash); both are
    skipped, as is any line that is not a JSON object with a string ``id``.
    """
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a torn fragment
    if not from_start and lines:
        lines.pop(0)
    ids: set[str] = set()
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            ids.add(record["id"])
    return ids


class FileSink:
    """Appends events as JSON lines; see the module docstring for durability."""

    Config: ClassVar[type[FileSinkConfig]] = FileSinkConfig

    def __init__(self, name: str, config: FileSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._fd: int | None = None
        self._pending: deque[Pending] = deque()
        # The writer thread: blocking calls, one at a time, in the order queued here.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # A write or fsync is running in the writer thread; `_idle` is set while none
        # runs (and nothing is queued), for aclose.
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._fsync_timer: asyncio.TimerHandle | None = None
        self._fsync_due = False  # batch mode: the interval is over, fsync next
        self._started = False
        self._closed = False
        self._torn = False  # the last write stopped mid-line
        self._dirty = False  # written but not fsynced (batch mode)
        self._last_fsync = time.monotonic()
        # Ids known to be in the file (see the module docstring), insertion-ordered so
        # the oldest go first when the bound is reached.
        self._known: dict[str, None] = {}
        self._recovered = 0
        # File size up to which the file has been read or written by us.
        self._known_end = 0
        self._metrics = _metrics(context.registry)

    @property
    def recovered_ids(self) -> int:
        """How many event ids were found in the file's tail at start."""
        return self._recovered

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"file sink {self.name!r} is closed", retriable=True)
        if self._fd is not None:
            return
        try:
            fd = await asyncio.to_thread(self._open)
        except OSError as exc:
            raise SinkError(self._describe(exc, "open"), retriable=True) from exc
        try:
            recovered, self._torn, self._known_end = await asyncio.to_thread(self._recover, fd)
        except OSError as exc:
            os.close(fd)
            raise SinkError(self._describe(exc, "read the end of"), retriable=True) from exc
        self._fd = fd
        self._remember(recovered)
        self._recovered = len(recovered)
        self._metrics.recovered.labels(self.name).set(len(recovered))
        if recovered:
            log.info(
                "file sink %s: %d event id(s) in the last %d bytes of %s will not be written again",
                self.name,
                len(recovered),
                self.config.recover_tail_bytes,
                self.config.path,
            )
        self._thread = threading.Thread(
            target=self._thread_main,
            args=(asyncio.get_running_loop(),),
            name=f"file-sink-{self.name}",
            daemon=True,
        )
        self._thread.start()
        self._started = True

    def _open(self) -> int:
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        return os.open(self.config.path, flags, self.config.mode)

    def _recover(self, fd: int) -> tuple[set[str], bool, int]:
        """The ids in the file's tail, whether the file ends mid-line, and its size.

        Reads up to the size seen through ``fd`` (opened first), so lines appended by
        other processes meanwhile are left out rather than read half-written.
        """
        size = os.fstat(fd).st_size
        if size == 0:
            return set(), False, 0
        with open(self.config.path, "rb") as reader:
            reader.seek(size - 1)
            torn = reader.read(1) != b"\n"
        return self._ids_between(0, size), torn, size

    def _ids_between(self, begin: int, end: int) -> set[str]:
        """Ids of the whole lines in ``[begin, end)`` of the file, at most the last
        ``recover_tail_bytes`` of it. ``begin`` is 0 or the end of a line."""
        limit = self.config.recover_tail_bytes
        if limit == 0 or end <= begin:
            return set()
        with open(self.config.path, "rb") as reader:
            # One byte more than the window: tells whether the window starts on a line.
            start = max(begin, end - limit - 1)
            reader.seek(start)
            data = reader.read(end - start)
        from_start = start == begin
        if not from_start and data[:1] == b"\n":
            data, from_start = data[1:], True
        return ids_in_tail(data, from_start=from_start)

    def _remember(self, ids: set[str]) -> None:
        known = self._known
        for event_id in ids:
            known[event_id] = None
        excess = len(known) - _MAX_KNOWN_IDS
        if excess > 0:
            for event_id in list(itertools.islice(known, excess)):
                del known[event_id]

    def _catch_up(self) -> tuple[set[str], int]:
        """In the writer thread, before a write: ids other processes appended since we
        last looked, and the file size now. Nothing is read when nobody else wrote."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size <= self._known_end:
            return set(), size
        return self._ids_between(self._known_end, size), size

    def _describe(self, exc: OSError, action: str) -> str:
        reason = exc.strerror or type(exc).__name__
        return f"file sink {self.name!r}: cannot {action} {str(self.config.path)!r}: {reason}"

    def _already_written(self, event_id: str) -> bool:
        if event_id not in self._known:
            return False
        self._metrics.already_written.labels(self.name).inc()
        log.debug("file sink %s: event %s is in the file already, not written", self.name, event_id)
        return True

    def _require_open(self) -> None:
        if self._closed or not self._started:
            state = "closed" if self._closed else "not started"
            raise SinkError(f"file sink {self.name!r} is {state}", retriable=True)

    async def send(self, event: Event) -> None:
        await self._enqueue([(event.id, event_line(event))])

    async def send_batch(self, events: Sequence[Event]) -> None:
        await self._enqueue([(e.id, event_line(e)) for e in events])

    async def _enqueue(self, lines: list[tuple[str, bytes]]) -> None:
        self._require_open()
        # Whether a line is in the file already is decided when its batch is handed to
        # the writer thread, after catching up with other writers. One future for all
        # lines: they go into one write, so they succeed or fail together.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((lines, done))
        if not self._busy:
            # Start now rather than from a writer task: a task woken here would run only
            # after every other callback already scheduled (for instance all the
            # deliveries the last write released), which kept the thread and the event
            # loop taking turns instead of working at the same time.
            self._write_next()
        await done

    def _run_blocking(self, func: Callable[..., None], args: tuple[Any, ...], then: _Then) -> None:
        """Run ``func(*args)`` in the writer thread, then ``then(error or None)`` on the
        event loop."""
        self._busy = True
        self._idle.clear()
        self._jobs.put((func, args, then))

    def _thread_main(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer thread. Its own thread with a plain queue rather than the loop's
        executor: besides the system calls (which release the GIL) it runs a few lines
        of Python per batch, fewer than the executor's futures and conditions, and each
        of them holds the GIL the event loop needs."""
        while (job := self._jobs.get()) is not None:
            func, args, then = job
            error: BaseException | None = None
            try:
                func(*args)
            except BaseException as exc:  # handed to the loop: no caller is left waiting
                error = exc
            try:
                loop.call_soon_threadsafe(then, error)
            except RuntimeError:  # the event loop is closed: nobody waits any more
                return

    def _write_next(self) -> None:
        """Hand the queued lines (up to ``_MAX_BATCH_BYTES``) to the worker thread."""
        batch: list[Pending] = []
        size = 0
        while self._pending:
            item_size = sum(len(line) for _, line in self._pending[0][0])
            if batch and size + item_size > _MAX_BATCH_BYTES:
                break
            batch.append(self._pending.popleft())
            size += item_size
        items = [lines for lines, _ in batch]
        after_write: Callable[[], None] | None = None
        if self._others_appended():
            # Reading what they appended may take a while: all of it in the thread.
            self._run_blocking(
                self._write_batch, (items,), functools.partial(self._written, batch, None)
            )
        else:
            # Only the write and fsync go to the thread. Picking the lines here keeps the
            # thread from holding the GIL (and the event loop waiting for it) meanwhile.
            before = self._known_end
            chunks, written = self._select(items)
            if not chunks:  # all in the file already: done, in the same order of events
                self._busy = True
                self._idle.clear()
                asyncio.get_running_loop().call_soon(self._written, batch, None, None)
            else:
                data = b"".join(chunks)
                if self._torn:
                    data = b"\n" + data
                after_write = functools.partial(self._after_write, written, before, len(data))
                self._run_blocking(
                    self._write_blocking,
                    (data, self.config.fsync == "always"),
                    functools.partial(self._written, batch, after_write),
                )

    def _others_appended(self) -> bool:
        """Whether the file grew past what we know (another process appended). One
        ``fstat``; a shrunk file (truncated) only moves what we know back."""
        if self.config.recover_tail_bytes == 0 or self._fd is None:
            return False
        size = os.fstat(self._fd).st_size
        if size > self._known_end:
            return True
        self._known_end = size
        return False

    def _after_write(self, written: set[str], before: int, length: int) -> None:
        """After a successful write picked by ``_select`` (on the event loop)."""
        if self.config.recover_tail_bytes == 0 or self._fd is None:
            return
        # Only after the write succeeded: a failed write is retried, not skipped.
        self._remember(written)
        after = os.fstat(self._fd).st_size
        # Only our bytes in between: nothing to read next time. Otherwise another
        # process wrote meanwhile; keep `before` so its lines are read next time.
        self._known_end = after if after == before + length else before

    def _written(
        self,
        batch: list[Pending],
        after_write: Callable[[], None] | None,
        exc: BaseException | None,
    ) -> None:
        error: SinkError | None = None
        if isinstance(exc, OSError):
            error = SinkError(self._describe(exc, "write to"), retriable=True)
        elif exc is not None:  # never leave callers waiting on a dead writer
            error = SinkError(f"file sink {self.name!r}: {type(exc).__name__}: {exc}")
        elif after_write is not None:
            after_write()
        for _, done in batch:
            if done.done():  # the caller was cancelled
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
        if self._dirty and self._fsync_timer is None and self.config.fsync == "batch":
            elapsed = time.monotonic() - self._last_fsync
            delay = max(0.0, self.config.fsync_interval_seconds - elapsed)
            self._fsync_timer = asyncio.get_running_loop().call_later(delay, self._fsync_now)
        self._next()

    def _next(self) -> None:
        """The thread is free: a due periodic fsync first, then queued lines."""
        self._busy = False
        if self._fsync_due and self._fd is not None:
            self._fsync_due = False
            self._run_blocking(self._periodic_fsync, (self._fd,), lambda _: self._next())
        elif self._pending:
            self._write_next()
        else:
            self._idle.set()

    def _fsync_now(self) -> None:
        """Batch mode: the interval since the last fsync is over."""
        self._fsync_timer = None
        self._fsync_due = True
        if not self._busy:
            self._next()

    def _periodic_fsync(self, fd: int) -> None:
        """Writer thread, batch mode."""
        if not self._dirty:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # the lines were acknowledged already; the next interval tries again
        else:
            self._dirty = False
        self._last_fsync = time.monotonic()

    def _select(self, items: list[list[tuple[str, bytes]]]) -> tuple[list[bytes], set[str]]:
        """The lines to write (those whose id is not in the file, each id once) and
        their ids."""
        recover = self.config.recover_tail_bytes > 0
        chunks = []
        written: set[str] = set()
        for lines in items:
            for event_id, line in lines:
                if recover and (event_id in written or self._already_written(event_id)):
                    continue
                chunks.append(line)
                written.add(event_id)
        return chunks, written

    def _write_batch(self, items: list[list[tuple[str, bytes]]]) -> None:
        """Writer thread, when another process appended to the file: catch up with it,
        drop lines already in the file, write the rest in one ``write``."""
        others, before = self._catch_up()
        self._remember(others)
        chunks, written = self._select(items)
        if not chunks:
            self._known_end = before
            return
        data = b"".join(chunks)
        if self._torn:
            data = b"\n" + data
        self._write_blocking(data, self.config.fsync == "always")
        # Only after the write succeeded: a failed write is retried, not skipped.
        self._remember(written)
        after = os.fstat(self._fd).st_size if self._fd is not None else before
        self._known_end = after if after == before + len(data) else before

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

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()  # what is queued is written, so no caller is left waiting
        if self._fsync_timer is not None:
            self._fsync_timer.cancel()
            self._fsync_timer = None
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                if self.config.fsync != "never":
                    await asyncio.to_thread(os.fsync, fd)
            except OSError as exc:
                raise SinkError(self._describe(exc, "fsync"), retriable=True) from None
            finally:
                os.close(fd)
                self._stop_thread()

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)  # it returns at once: nothing is queued before it
