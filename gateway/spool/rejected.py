"""Records the spool set aside, and sending them again.

A journaled record that Kafka refuses for good (its topic was deleted after the record
was accepted, or it is too large for the topic now) must not hold every later record,
and it must not be dropped either: it was answered 202. The drainer appends it to
``<journal dir>/rejected`` (journal frames, fsynced) before moving past it, and
``python -m gateway spool resend`` produces those records again once the cause is fixed
(the topic re-created, ``max.message.bytes`` raised).

The file is shared between a running gateway, which appends, and ``resend``, which
takes it: ``resend`` renames it first, so appends after the rename go to a new file; an
appender holds an exclusive ``flock`` while it writes and, after locking, checks that
the file it opened is still the one at the path (else it opens the new one), so nothing
is written to a file ``resend`` has already read.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.producer import Headers, KafkaProducer, ProduceError, Record, RecordProducer
from gateway.spool.codec import FRAME, decode, encode

REJECTED = "rejected"
# A file `resend` took; left behind only when it was interrupted, and taken again.
TAKEN_PREFIX = "rejected.taken-"


def append_rejected(path: Path, records: Sequence[Record]) -> None:
    """Append ``records`` to the rejected file at ``path`` and fsync (blocking)."""
    data = b"".join(encode(r) for r in records)
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
            if current != os.fstat(fd).st_ino:
                continue  # `resend` took this file meanwhile: write to the new one
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return
        finally:
            os.close(fd)  # also releases the lock


@dataclass(frozen=True, slots=True)
class Taken:
    """The records of one taken file, and the bytes at its end that were no frame (a
    crash while appending: those records are still in the journal, which sets them
    aside again)."""

    path: Path
    records: list[Record]
    unreadable_bytes: int


def read_rejected(path: Path) -> Taken:
    data = path.read_bytes()
    records: list[Record] = []
    at = 0
    while at + FRAME.size <= len(data):
        length, crc = FRAME.unpack_from(data, at)
        payload = data[at + FRAME.size : at + FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        try:
            records.append(decode(payload))
        except ValueError:
            break
        at += FRAME.size + length
    return Taken(path, records, len(data) - at)


def take_rejected(directory: Path) -> list[Taken]:
    """Take the rejected file of ``directory`` (and one an interrupted ``resend`` left):
    renamed, then read once no appender holds it."""
    taken: list[Taken] = []
    current = directory / REJECTED
    if current.exists():
        target = directory / f"{TAKEN_PREFIX}{time.time_ns()}"
        os.rename(current, target)
    for path in sorted(directory.glob(f"{TAKEN_PREFIX}*")):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # an append begun before the rename ends first
            taken.append(read_rejected(path))
        finally:
            os.close(fd)
    return taken


@dataclass
class ResendReport:
    sent: int = 0
    failed: list[str] = field(default_factory=list)  # one line per record kept
    unreadable_bytes: int = 0
    files: int = 0


async def resend(
    directories: Sequence[Path], producer: RecordProducer, deadline: float
) -> ResendReport:
    """Produce every set-aside record of the journal ``directories`` again, file by
    file in the order they were set aside. What Kafka refuses again goes back into
    the rejected file of its directory; a taken file is removed only after that."""
    report = ResendReport()
    for directory in directories:
        for taken in take_rejected(directory):
            report.files += 1
            report.unreadable_bytes += taken.unreadable_bytes
            kept: list[Record] = []
            for record in taken.records:
                try:
                    await producer.send(
                        record.topic, record.key, record.value, record.headers, deadline
                    )
                except ProduceError as exc:
                    kept.append(record)
                    report.failed.append(f"{directory}: topic {record.topic!r}: {exc}")
                else:
                    report.sent += 1
            if kept:
                append_rejected(directory / REJECTED, kept)
            taken.path.unlink()
    return report


class _Known:
    """Sends only to topics Kafka knows: a record for a still-missing topic is kept at
    once instead of waiting out the deadline for metadata that will not come."""

    def __init__(self, producer: RecordProducer, missing: set[str]) -> None:
        self._producer = producer
        self._missing = missing

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        if topic in self._missing:
            raise ProduceError("unknown_topic", "the topic does not exist", retriable=False)
        await self._producer.send(topic, key, value, headers, deadline)

    async def readiness(self) -> str | None:
        return await self._producer.readiness()

    def topic_known(self, topic: str) -> bool:
        return topic not in self._missing


async def resend_spool(cfg: GatewayConfig, root: Path, deadline: float) -> ResendReport:
    """:func:`resend` for every journal under ``root`` with the gateway's producer."""
    # Here, not at the top: adoption builds on the journal, which builds on this module.
    from gateway.spool.adoption import journal_dirs

    directories = journal_dirs(root)
    topics = sorted(
        {r.topic for d in directories for t in _peek(d) for r in t.records}
        | {s.topic for s in cfg.sources}
    )
    producer = KafkaProducer(
        cfg.kafka, cfg.gateway.producer, max_request_size=cfg.max_request_size, topics=topics
    )
    await producer.start()
    try:
        missing = set(await producer.missing_topics())
        return await resend(directories, _Known(producer, missing), deadline)
    finally:
        await producer.stop()


def _peek(directory: Path) -> list[Taken]:
    """The set-aside records of ``directory`` without taking them."""
    paths = [directory / REJECTED, *sorted(directory.glob(f"{TAKEN_PREFIX}*"))]
    return [read_rejected(p) for p in paths if p.exists()]
