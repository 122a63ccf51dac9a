"""The journal on disk (blocking; called from worker threads).

One directory per process, guarded by an exclusive ``flock`` on ``lock``: segment files
``<16-digit number>.journal`` starting with the 8-byte magic ``WGSPOOL1``, then frames
(:mod:`gateway.spool.codec`). A crash can leave a torn last frame; on startup it fails
the length or CRC check and is cut off. ``checkpoint`` is ``>QQI``: segment, offset,
CRC-32 of the first 16 bytes, replaced atomically (write, fsync, rename, fsync the
directory)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.producer import Record
from gateway.spool.codec import FRAME, decode
from gateway.spool.rejected import append_rejected
from webhook_common.errors import WebhookGatewayError

log = logging.getLogger("gateway.spool")

MAGIC = b"WGSPOOL1"
HEADER_SIZE = len(MAGIC)
CHECKPOINT = struct.Struct(">QQI")
SUFFIX = ".journal"


class SpoolOpenError(WebhookGatewayError):
    """The spool directory cannot be used (locked by another process, not a journal)."""


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
    # A torn last record cut off (what a crash mid-append leaves; nothing acknowledged).
    truncated_bytes: int
    # Unreadable bytes skipped elsewhere (damage); the valid frames around them are kept.
    skipped_bytes: int = 0


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Where a frame may start when resynchronising after unreadable bytes: a frame header,
# then a topic length below 250 (Kafka's limit) and a first topic character. Only a
# cheap filter; the CRC and a full decode decide.
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{8}\x00[\x01-\xf9][A-Za-z0-9._-])", re.DOTALL)
# u16 topic length + one byte of topic + u32 key length + u32 value length + u16 count.
_MIN_PAYLOAD = 13


@dataclass(frozen=True, slots=True)
class Scan:
    """The frames of one segment from a start offset: ``runs`` of valid frames and the
    unreadable ``gaps`` between or after them, as ``(start, end)`` byte ranges."""

    size: int
    records: int
    bytes: int
    runs: list[tuple[int, int]]
    gaps: list[tuple[int, int]]

    @property
    def valid_end(self) -> int:
        """The end of the readable prefix (where the first gap starts)."""
        return self.gaps[0][0] if self.gaps else self.size

    @property
    def torn_tail_only(self) -> bool:
        """One gap, running to the end of the file: what a crash mid-append leaves."""
        return len(self.gaps) == 1 and self.gaps[0][1] == self.size


def _frame_at(data: bytes | mmap.mmap, at: int, size: int) -> int:
    """The size of the valid frame starting at ``at``, or 0."""
    if at + FRAME.size > size:
        return 0
    length: int
    crc: int
    length, crc = FRAME.unpack_from(data, at)
    end = at + FRAME.size + length
    if length < _MIN_PAYLOAD or end > size:
        return 0
    payload = data[at + FRAME.size : end]
    if zlib.crc32(payload) != crc:
        return 0
    try:
        decode(payload)
    except (ValueError, UnicodeDecodeError):
        return 0
    return FRAME.size + length


def _scan_bytes(data: bytes | mmap.mmap, start: int, size: int) -> Scan:
    runs: list[tuple[int, int]] = []
    gaps: list[tuple[int, int]] = []
    records = nbytes = 0
    at = min(start, size)
    run_start = at
    while at < size:
        n = _frame_at(data, at, size)
        if n:
            at += n
            records += 1
            nbytes += n
            continue
        if at > run_start:
            runs.append((run_start, at))
        # Resynchronise: the next offset where a whole valid frame starts.
        nxt = size
        for match in _CANDIDATE.finditer(data, at + 1):
            if _frame_at(data, match.start(), size):
                nxt = match.start()
                break
        gaps.append((at, nxt))
        at = run_start = nxt
    if at > run_start:
        runs.append((run_start, at))
    return Scan(size, records, nbytes, runs, gaps)


def _scan(path: Path, start: int) -> Scan:
    """Every valid frame of the segment at ``path`` from ``start``, skipping unreadable
    bytes: a bad frame never hides the valid ones after it."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= start:
            return Scan(size, 0, 0, [], [])
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _scan_bytes(data, start, size)


def _rewrite_without_gaps(path: Path, scan: Scan, start: int) -> None:
    """Replace the segment by its bytes before ``start`` (drained frames, so the
    checkpoint's offset stays valid) and its valid frames after, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as data:
            dst.write(data[:start])
            for a, b in scan.runs:
                dst.write(data[a:b])
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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
            fsync_dir(directory)
            segments = [n]
        if checkpoint is not None and checkpoint.segment == segments[0]:
            read = checkpoint
        else:
            read = Position(segments[0], HEADER_SIZE)
        records = nbytes = truncated = skipped = 0
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
            scan = _scan(path, start)
            if n == read.segment and read.offset > scan.size:
                read = Position(n, scan.size)
            length = scan.size
            if scan.torn_tail_only and n == segments[-1]:
                length = scan.valid_end
                truncated += scan.size - length
                log.warning(
                    "spool: cut a torn last record (%d bytes) off %s", scan.size - length, path
                )
                with path.open("r+b") as f:
                    f.truncate(length)
                    os.fsync(f.fileno())
            elif scan.gaps:
                lost = sum(b - a for a, b in scan.gaps)
                skipped += lost
                log.error(
                    "spool: %s has %d unreadable region(s) from offset %d, %d bytes in all: "
                    "skipped, and the %d valid record(s) around them kept",
                    path,
                    len(scan.gaps),
                    scan.gaps[0][0],
                    lost,
                    scan.records,
                    extra={"spool_skipped_bytes": lost},
                )
                _rewrite_without_gaps(path, scan, start)
                length = scan.size - lost
            records += scan.records
            nbytes += scan.bytes
            end = Position(n, length)
        journal = cls(directory, segment_bytes, fsync, lock_fd, segments[-1])
        return journal, Recovery(read, end, records, nbytes, truncated, skipped)

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

    def repair(self, end: Position) -> None:
        """Cut the journal back to ``end``, the end of the last append that succeeded,
        after a failed one: whatever the failure left (a torn frame, a new segment) goes,
        so nothing written later can sit behind a bad frame. Raises ``OSError`` when the
        files cannot be put back (the spool then stays off)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1
        for n in self.segments():
            if n > end.segment:
                self.path(n).unlink()
        fd = os.open(self.path(end.segment), os.O_WRONLY | os.O_APPEND)
        try:
            os.ftruncate(fd, end.offset)
            os.fsync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.segment = end.segment
        self.offset = end.offset

    @property
    def rejected_path(self) -> Path:
        return self.directory / "rejected"

    def reject(self, records: Sequence[Record]) -> None:
        """Set ``records`` aside in the ``rejected`` file, fsynced
        (:mod:`gateway.spool.rejected`)."""
        append_rejected(self.rejected_path, records)

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
        fsync_dir(self.directory)
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
        fsync_dir(self.directory)
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
