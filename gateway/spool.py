"""The optional durable spool (``gateway.spool``, off by default).

When Kafka does not acknowledge a verified record in time (or refuses it with a
retriable error), the record is appended to a local append-only journal, fsynced, and
only then answered 202. A background drainer hands journaled records to the producer in
the order they were accepted and, once Kafka acknowledged them, advances a durable read
position (the ``checkpoint`` file) and deletes fully drained segment files.

While the spool holds records, new verified records are journaled too instead of going
to Kafka directly, so no record overtakes an earlier one for the same key.

Journal format (one directory per process, guarded by an exclusive ``flock`` on
``lock``): segment files ``<16-digit number>.journal`` starting with the 8-byte magic
``WGSPOOL1``, then frames of ``>II`` (payload length, CRC-32 of the payload) followed by
the payload: ``u16`` topic length + topic, ``u32`` key length + key, ``u32`` value length
+ value, ``u16`` header count, and per header ``u16`` name length + name, ``u32`` value
length + value (big-endian, UTF-8 names). A crash can leave a torn last frame; on
startup it fails the length or CRC check and is cut off. ``checkpoint`` is ``>QQI``:
segment, offset, CRC-32 of the first 16 bytes, replaced atomically (write, fsync,
rename, fsync the directory).

Write and fsync run in a worker thread, never on the event loop, and are group
commits: every record appended while one commit runs goes into the next one, which
shares one fsync.

With ``serve --workers N`` (N > 1) worker ``i`` journals in ``<path>/worker-<i>``; a
single process uses ``<path>`` itself. So that nothing acknowledged is stranded when the
number of workers changes between runs, each process *adopts* the journals no process
of this run owns (:func:`worker_dirs`): it copies their undrained records into its own
journal before serving, fsyncs, and only then marks the orphan drained and removes it.
A crash in between sends those records twice (the consumers deduplicate by event id),
never zero times.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import SpoolSettings
from gateway.metrics import IngressMetrics
from gateway.producer import ProduceError, Record, RecordProducer
from webhook_common.errors import WebhookGatewayError

log = logging.getLogger(__name__)

MAGIC = b"WGSPOOL1"
HEADER_SIZE = len(MAGIC)
FRAME = struct.Struct(">II")
CHECKPOINT = struct.Struct(">QQI")
SUFFIX = ".journal"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# How long `stop` keeps draining before leaving the rest on disk for the next start.
STOP_DRAIN_SECONDS = 5.0

Enqueue = Callable[[Record], Awaitable["asyncio.Future[Any]"]]


def enqueue_via_send(producer: RecordProducer, deadline: float) -> Enqueue:
    """An :data:`Enqueue` for a producer that only has ``send`` (test fakes): one task
    per record, started in call order."""

    async def enqueue(record: Record) -> asyncio.Future[Any]:
        return asyncio.ensure_future(
            producer.send(record.topic, record.key, record.value, record.headers, deadline)
        )

    return enqueue


class SpoolFull(ProduceError):
    """The journal holds ``max_bytes`` of undrained records: answered 503."""

    def __init__(self, detail: str) -> None:
        super().__init__("spool_full", detail, retriable=False)


class SpoolWriteError(ProduceError):
    """Writing or fsyncing the journal failed: answered 503."""

    def __init__(self, detail: str) -> None:
        super().__init__("spool_error", detail, retriable=False)


class SpoolOpenError(WebhookGatewayError):
    """The spool directory cannot be used (locked by another process, not a journal)."""


# --- record encoding -----------------------------------------------------------------


def encode(record: Record) -> bytes:
    """One frame: length, CRC-32, payload."""
    topic = record.topic.encode()
    parts = [_U16.pack(len(topic)), topic, _U32.pack(len(record.key)), record.key]
    parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
    for name, value in record.headers:
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _U32.pack(len(value)), value]
    payload = b"".join(parts)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("payload ends inside a field")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value


def decode(payload: bytes) -> Record:
    """The record of a frame's payload; ``ValueError`` when it is malformed."""
    r = _Reader(payload)
    topic = r.take(r.u16()).decode()
    key = r.take(r.u32())
    value = r.take(r.u32())
    headers = []
    for _ in range(r.u16()):
        name = r.take(r.u16()).decode()
        headers.append((name, r.take(r.u32())))
    if r.at != len(payload):
        raise ValueError("bytes after the last header")
    return Record(topic, key, value, headers)


# --- the journal files (blocking; called from worker threads) --------------------------


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Entry:
    position: Position
    next: Position
    record: Record
    size: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`Journal.open` found: undrained records and bytes cut off."""

    read: Position
    end: Position
    records: int
    bytes: int
    truncated_bytes: int


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(path: Path, start: int) -> tuple[int, int, int, int]:
    """(records, bytes, valid end, file size) of the frames from ``start``."""
    size = path.stat().st_size
    records = nbytes = 0
    at = min(start, size)
    with path.open("rb") as f:
        f.seek(at)
        while True:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                break
            length, crc = FRAME.unpack(head)
            if at + FRAME.size + length > size:
                break
            payload = f.read(length)
            if zlib.crc32(payload) != crc:
                break
            try:
                decode(payload)
            except (ValueError, UnicodeDecodeError):
                break
            at += FRAME.size + length
            records += 1
            nbytes += FRAME.size + length
    return records, nbytes, at, size


# --- one journal per process, with `serve --workers` ---------------------------------

WORKER_DIR_PREFIX = "worker-"


def worker_dirs(root: Path, index: int, count: int) -> tuple[Path, list[Path]]:
    """The journal directory of worker ``index`` of ``count`` (``count`` 1: the single
    process, which uses ``root`` itself) and the orphan directories it adopts.

    Orphans are the journals of a run with another number of processes: ``root`` itself
    (a single-process run) goes to worker 0; ``root/worker-<j>`` with ``j >= count`` to
    worker ``j % count``. Every orphan has exactly one adopter, so two processes never
    open the same journal."""
    own = root if count == 1 else root / f"{WORKER_DIR_PREFIX}{index}"
    orphans: list[Path] = []
    if count > 1 and index == 0:
        orphans.append(root)
    try:
        children = sorted(root.iterdir())
    except OSError:  # no spool yet
        children = []
    for child in children:
        number = child.name.removeprefix(WORKER_DIR_PREFIX)
        if child.name.startswith(WORKER_DIR_PREFIX) and number.isdigit() and child.is_dir():
            j = int(number)
            if count == 1 or (j >= count and j % count == index):
                orphans.append(child)
    return own, orphans


def _adopt(
    journal: Journal, recovery: Recovery, orphan: Path, batch: int, *, is_root: bool
) -> Recovery:
    """Move the undrained records of the journal in ``orphan`` behind those of
    ``journal`` (see the module docstring); the recovery figures including them.
    ``is_root``: ``orphan`` is the parent of the worker directories (kept, with its lock)."""
    if is_root and not list_segments(orphan):
        return recovery  # the parent of the worker dirs, never a journal itself
    other, found = Journal.open(orphan, journal.segment_bytes, journal.fsync)
    moved = nbytes = 0
    end = recovery.end
    try:
        pos = found.read
        while pos < found.end:
            entries, pos = other.read(pos, found.end, batch)
            if not entries:
                break
            _, end = journal.append_many([encode(e.record) for e in entries])
            moved += len(entries)
            nbytes += sum(e.size for e in entries)
        # Durable here before the orphan forgets them, whatever `gateway.spool.fsync` says.
        journal.sync()
        if found.records:
            other.checkpoint(found.end)
        for n in other.segments():
            other.path(n).unlink(missing_ok=True)
        for name in ("checkpoint", "checkpoint.tmp", *(() if is_root else ("lock",))):
            (orphan / name).unlink(missing_ok=True)
        _fsync_dir(orphan)
    finally:
        other.close()
    if not is_root:
        with contextlib.suppress(OSError):
            orphan.rmdir()
    if moved:
        log.info(
            "spool: adopted %d undrained record(s) (%d bytes) from %s",
            moved,
            nbytes,
            orphan,
            extra={"spool_orphan": str(orphan)},
        )
    return Recovery(
        recovery.read,
        end,
        recovery.records + moved,
        recovery.bytes + nbytes,
        recovery.truncated_bytes + found.truncated_bytes,
    )


def open_and_adopt(
    directory: Path, settings: SpoolSettings, adopt: Sequence[Path]
) -> tuple[Journal, Recovery]:
    """:meth:`Journal.open` on ``directory``, then :func:`_adopt` each of ``adopt``."""
    journal, recovery = Journal.open(directory, settings.segment_bytes, settings.fsync)
    try:
        for orphan in adopt:
            recovery = _adopt(
                journal, recovery, orphan, settings.drain_batch, is_root=orphan == directory.parent
            )
    except BaseException:
        journal.close()
        raise
    return journal, recovery


class Journal:
    """Segment files, the checkpoint and the directory lock. Not thread-safe by itself:
    one thread appends (the committer), one reads and checkpoints (the drainer); they
    share no mutable state except that segments below the read position are deleted
    and the appender never touches those."""

    def __init__(
        self, directory: Path, segment_bytes: int, fsync: bool, lock_fd: int, segment: int
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock_fd = lock_fd
        self.segment = segment
        self._fd = os.open(self.path(segment), os.O_WRONLY | os.O_APPEND)
        self.offset = os.fstat(self._fd).st_size
        self._deleted_below = 0

    def path(self, segment: int) -> Path:
        return segment_path(self.directory, segment)

    def segments(self) -> list[int]:
        return list_segments(self.directory)

    # opening and recovery

    @classmethod
    def open(cls, directory: Path, segment_bytes: int, fsync: bool) -> tuple[Journal, Recovery]:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolOpenError(
                f"cannot use spool directory {str(directory)!r}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise SpoolOpenError(
                f"spool directory {str(directory)!r} is in use by another gateway process "
                "(each process needs its own gateway.spool.path)"
            ) from None
        try:
            return cls._recover(directory, segment_bytes, fsync, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _recover(
        cls, directory: Path, segment_bytes: int, fsync: bool, lock_fd: int
    ) -> tuple[Journal, Recovery]:
        checkpoint = read_checkpoint(directory)
        segments = list_segments(directory)
        if checkpoint is not None:
            # Drained before a crash that came between checkpoint and delete.
            for n in [s for s in segments if s < checkpoint.segment]:
                segment_path(directory, n).unlink()
            segments = [s for s in segments if s >= checkpoint.segment]
        if not segments:
            n = checkpoint.segment + 1 if checkpoint is not None else 1
            _create_segment(segment_path(directory, n))
            _fsync_dir(directory)
            segments = [n]
        if checkpoint is not None and checkpoint.segment == segments[0]:
            read = checkpoint
        else:
            read = Position(segments[0], HEADER_SIZE)
        records = nbytes = truncated = 0
        end = read
        for n in segments:
            path = segment_path(directory, n)
            with path.open("rb") as f:
                magic = f.read(HEADER_SIZE)
            if magic != MAGIC:
                if n == segments[-1] and MAGIC.startswith(magic):
                    _create_segment(path)  # a crash while creating it
                else:
                    raise SpoolOpenError(f"{str(path)!r} is not a spool journal segment")
            start = read.offset if n == read.segment else HEADER_SIZE
            count, size_ok, valid_end, size = _scan(path, start)
            if n == read.segment and read.offset > valid_end:
                read = Position(n, valid_end)
            if valid_end < size:
                cut = size - valid_end
                truncated += cut
                if n == segments[-1]:
                    log.warning("spool: cut a torn last record (%d bytes) off %s", cut, path)
                else:
                    log.error(
                        "spool: %s is corrupt at offset %d; %d bytes after it are lost",
                        path,
                        valid_end,
                        cut,
                    )
                with path.open("r+b") as f:
                    f.truncate(valid_end)
                    os.fsync(f.fileno())
            records += count
            nbytes += size_ok
            end = Position(n, valid_end)
        journal = cls(directory, segment_bytes, fsync, lock_fd, segments[-1])
        return journal, Recovery(read, end, records, nbytes, truncated)

    # appending (the committer thread)

    def append_many(self, frames: Sequence[bytes]) -> tuple[list[Position], Position]:
        """Write ``frames`` in order and fsync; their positions and the new end."""
        positions: list[Position] = []
        chunk: list[bytes] = []
        for frame in frames:
            if self.offset > HEADER_SIZE and self.offset + len(frame) > self.segment_bytes:
                self._write(chunk)
                chunk = []
                self._roll()
            positions.append(Position(self.segment, self.offset))
            chunk.append(frame)
            self.offset += len(frame)
        self._write(chunk)
        if self.fsync:
            os.fsync(self._fd)
        return positions, Position(self.segment, self.offset)

    def sync(self) -> None:
        os.fsync(self._fd)

    def _write(self, chunk: list[bytes]) -> None:
        data = memoryview(b"".join(chunk))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def _roll(self) -> None:
        if self.fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self.segment += 1
        _create_segment(self.path(self.segment))
        _fsync_dir(self.directory)
        self._fd = os.open(self.path(self.segment), os.O_WRONLY | os.O_APPEND)
        self.offset = HEADER_SIZE

    # reading and checkpointing (the drainer thread)

    def read(self, start: Position, end: Position, limit: int) -> tuple[list[Entry], Position]:
        """Up to ``limit`` records from ``start`` (before ``end``, the committed end),
        and the position after the last one read."""
        entries: list[Entry] = []
        pos = start
        while len(entries) < limit and pos < end:
            with self.path(pos.segment).open("rb") as f:
                f.seek(pos.offset)
                while len(entries) < limit and pos < end:
                    head = f.read(FRAME.size)
                    if len(head) < FRAME.size:
                        break
                    length, crc = FRAME.unpack(head)
                    payload = f.read(length)
                    if len(payload) != length or zlib.crc32(payload) != crc:
                        raise OSError(f"spool journal {self.path(pos.segment)} corrupt at {pos}")
                    nxt = Position(pos.segment, pos.offset + FRAME.size + length)
                    entries.append(Entry(pos, nxt, decode(payload), FRAME.size + length))
                    pos = nxt
            if len(entries) < limit and pos.segment < end.segment and pos < end:
                pos = Position(pos.segment + 1, HEADER_SIZE)  # end of a sealed segment
        return entries, pos

    def checkpoint(self, pos: Position) -> None:
        """Durably record ``pos`` as drained up to, then delete the segments before it."""
        head = struct.pack(">QQ", pos.segment, pos.offset)
        tmp = self.directory / "checkpoint.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, CHECKPOINT.pack(pos.segment, pos.offset, zlib.crc32(head)))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "checkpoint")
        _fsync_dir(self.directory)
        if pos.segment > self._deleted_below:
            for n in self.segments():
                if n < pos.segment:
                    self.path(n).unlink(missing_ok=True)
            self._deleted_below = pos.segment

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)  # releases the flock


def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:016d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    found = []
    for p in directory.glob("*" + SUFFIX):
        stem = p.name[: -len(SUFFIX)]
        if stem.isdigit():
            found.append(int(stem))
    return sorted(found)


def _create_segment(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, MAGIC)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(directory: Path) -> Position | None:
    """The drained-up-to position, or None (none yet, or unreadable: then everything
    in the journal is sent again, which may duplicate but never loses)."""
    try:
        data = (directory / "checkpoint").read_bytes()
    except FileNotFoundError:
        return None
    if len(data) != CHECKPOINT.size:
        log.warning("spool: checkpoint file has the wrong size; draining from the start")
        return None
    segment, offset, crc = CHECKPOINT.unpack(data)
    if zlib.crc32(data[:16]) != crc:
        log.warning("spool: checkpoint file is corrupt; draining from the start")
        return None
    return Position(segment, offset)


# --- the spool (event loop side) -------------------------------------------------------


def _delivered(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


@dataclass(slots=True)
class _Append:
    frame: bytes
    done: asyncio.Future[None]
    pending: asyncio.Future[Any] | None


class Spool:
    """Journal + group committer + drainer. Build with :meth:`open`, then
    :meth:`start`; :meth:`stop` after the webhook port stopped."""

    def __init__(
        self,
        journal: Journal,
        recovery: Recovery,
        settings: SpoolSettings,
        metrics: IngressMetrics,
        enqueue: Enqueue,
        ack_timeout: float,
    ) -> None:
        self._journal = journal
        self._settings = settings
        self._metrics = metrics
        self._enqueue = enqueue
        self._ack_timeout = ack_timeout
        self._read = recovery.read
        self._end = recovery.end
        self._records = recovery.records
        self._bytes = recovery.bytes
        self.recovered_records = recovery.records
        self.truncated_bytes = recovery.truncated_bytes
        self._queue: list[_Append] = []
        # Records whose first copy the producer may still deliver: decided before resending.
        self._in_doubt: dict[Position, asyncio.Future[Any]] = {}
        self._wake = asyncio.Event()
        self._data = asyncio.Event()
        self._empty = asyncio.Event()
        self._stop = asyncio.Event()
        self._broken: str | None = None
        self._closed = False
        self.last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._gauges()

    @classmethod
    async def open(
        cls,
        settings: SpoolSettings,
        metrics: IngressMetrics,
        enqueue: Enqueue,
        ack_timeout: float,
        *,
        directory: Path | None = None,
        adopt: Sequence[Path] = (),
    ) -> Spool:
        """``directory``: this process's journal (default ``settings.path``);
        ``adopt``: orphan journals to take over first (:func:`worker_dirs`)."""
        journal, recovery = await asyncio.to_thread(
            open_and_adopt, directory or Path(settings.path), settings, adopt
        )
        if recovery.records:
            log.info(
                "spool: %d record(s) (%d bytes) from a previous run to drain",
                recovery.records,
                recovery.bytes,
            )
        return cls(journal, recovery, settings, metrics, enqueue, ack_timeout)

    @property
    def records(self) -> int:
        """Records accepted into the spool and not yet acknowledged by Kafka."""
        return self._records

    @property
    def broken(self) -> bool:
        """True after a journal write failed: spooling is off until restart."""
        return self._broken is not None

    @property
    def active(self) -> bool:
        """True while the spool holds records: new records must queue behind them."""
        return self._records > 0

    def status(self) -> dict[str, Any]:
        """For ``/readyz``."""
        info: dict[str, Any] = {
            "records": self._records,
            "bytes": self._bytes,
            "max_bytes": self._settings.max_bytes,
        }
        if self._broken:
            info["error"] = self._broken
        elif self._records and self.last_error:
            info["last_drain_error"] = self.last_error
        return info

    def _gauges(self) -> None:
        self._metrics.spool_backlog_records.set(self._records)
        self._metrics.spool_backlog_bytes.set(self._bytes)
        if self._records:
            self._empty.clear()
        else:
            self._empty.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="spool-commit"),
            asyncio.create_task(self._drain_loop(), name="spool-drain"),
        ]

    async def wait_drained(self, within: float) -> bool:
        """True once every spooled record was acknowledged by Kafka (within the bound)."""
        try:
            async with asyncio.timeout(within):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_within: float = STOP_DRAIN_SECONDS) -> None:
        """Finish pending commits, drain for at most ``drain_within`` seconds, close.
        What is left stays in the journal for the next start. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._records and not self._broken:
            await self.wait_drained(drain_within)
        self._stop.set()
        self._wake.set()
        self._data.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.to_thread(self._journal.close)
        if self._records:
            log.info("spool: %d record(s) left to drain at the next start", self._records)

    # appending (request handlers)

    async def append(
        self,
        record: Record,
        *,
        source: str,
        reason: str,
        pending: asyncio.Future[Any] | None = None,
    ) -> None:
        """Return once ``record`` is in the journal (fsynced when configured); raise
        :class:`SpoolFull` or :class:`SpoolWriteError` otherwise. ``pending``: the
        producer's future of an earlier attempt (see :class:`ProduceError`)."""
        if self._broken or self._stop.is_set():
            raise SpoolWriteError(self._broken or "the spool is closed")
        frame = encode(record)
        if self._bytes + len(frame) > self._settings.max_bytes:
            raise SpoolFull(
                f"Kafka did not acknowledge and the spool is full "
                f"({self._bytes} of {self._settings.max_bytes} bytes)"
            )
        self._bytes += len(frame)
        self._records += 1
        self._gauges()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Append(frame, done, pending))
        self._wake.set()
        # Shielded: a request cancelled now still has its record committed.
        await asyncio.shield(done)
        self._metrics.spooled.labels(source, reason).inc()

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                started = time.perf_counter()
                try:
                    positions, end = await asyncio.to_thread(
                        self._journal.append_many, [a.frame for a in batch]
                    )
                except Exception as exc:
                    self._fail(batch, exc)
                    continue
                self._metrics.spool_fsync_duration.observe(time.perf_counter() - started)
                self._end = end
                for position, item in zip(positions, batch, strict=True):
                    if item.pending is not None:
                        self._in_doubt[position] = item.pending
                    if not item.done.done():
                        item.done.set_result(None)
                self._data.set()
            if self._stop.is_set():
                return

    def _fail(self, batch: list[_Append], exc: Exception) -> None:
        # The file may now hold part of this batch: stop writing to it. Recovery at the
        # next start cuts whatever is torn; frames that did land are drained then.
        self._broken = f"spool journal write failed: {type(exc).__name__}: {exc}"
        log.error("%s; spooling is off until restart", self._broken)
        for item in batch:
            self._bytes -= len(item.frame)
            self._records -= 1
            if not item.done.done():
                item.done.set_exception(SpoolWriteError(self._broken))
        self._gauges()

    # draining

    async def _drain_loop(self) -> None:
        while not self._stop.is_set():
            if not self._read < self._end:
                await self._data.wait()
                self._data.clear()
                continue
            try:
                entries, resume = await asyncio.to_thread(
                    self._journal.read, self._read, self._end, self._settings.drain_batch
                )
            except Exception as exc:
                self.last_error = f"cannot read the journal: {exc}"
                log.error("spool: %s", self.last_error)
                await self._pause()
                continue
            if not entries:
                self._read = resume
                continue
            acked, futures = await self._send(entries)
            if acked:
                self._release(entries[:acked], resume if acked == len(entries) else None)
                await self._checkpoint()
            if acked < len(entries):
                for entry, future in zip(entries[acked:], futures[acked:], strict=False):
                    self._in_doubt[entry.position] = future
                await self._pause()

    async def _send(self, entries: list[Entry]) -> tuple[int, list[asyncio.Future[Any]]]:
        """Hand ``entries`` to the producer in order; how many leading ones Kafka
        acknowledged within the deadline, and the futures of those handed over."""
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._ack_timeout):
                for entry in entries:
                    prior = self._in_doubt.get(entry.position)
                    if prior is not None:
                        if not prior.done():
                            # An earlier copy is still in the producer: its outcome
                            # decides whether this one must be sent at all.
                            await asyncio.wait([prior])
                        if _delivered(prior):
                            futures.append(prior)
                            continue
                    futures.append(await self._enqueue(entry.record))
                waiting = [f for f in futures if not f.done()]
                if waiting:
                    await asyncio.wait(waiting)
        except TimeoutError:
            self.last_error = f"Kafka did not acknowledge within {self._ack_timeout:g} s"
        except ProduceError as exc:
            self.last_error = str(exc)
        acked = 0
        for future in futures:
            if not _delivered(future):
                if future.done() and not future.cancelled():
                    self.last_error = f"Kafka refused: {type(future.exception()).__name__}"
                break
            acked += 1
        return acked, futures

    def _release(self, done: list[Entry], resume: Position | None) -> None:
        for entry in done:
            self._in_doubt.pop(entry.position, None)
            self._bytes -= entry.size
        self._records -= len(done)
        self._read = resume if resume is not None else done[-1].next
        self._metrics.spool_drained.inc(len(done))
        self._gauges()
        if not self._records:
            self.last_error = None

    async def _checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._journal.checkpoint, self._read)
        except OSError as exc:
            # Kafka has these records; a crash before the next checkpoint resends them
            # (duplicates, never losses).
            log.warning("spool: cannot write the checkpoint: %s", exc)

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.retry_seconds):
                await self._stop.wait()
