"""The spool on the event loop: the group committer and the drainer over a
:class:`~gateway.spool.journal.Journal`.

Write and fsync run in a worker thread, never on the event loop, and are group commits:
every record appended while one commit runs goes into the next one, which shares one
fsync. While the spool holds records, new verified records are journaled too instead of
going to Kafka directly, and a record whose key has an earlier record still in its
acknowledgement wait waits for that one's outcome first, so no record overtakes an
earlier one for the same key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import SpoolSettings
from gateway.metrics import IngressMetrics
from gateway.producer import ProduceError, Record, RecordProducer, unknown_topic
from gateway.spool.adoption import open_and_adopt
from gateway.spool.codec import encode
from gateway.spool.journal import Entry, Journal, Position, Recovery
from webhook_common.idempotent import retriable

log = logging.getLogger("gateway.spool")

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


def _delivered(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _refused_for_good(future: asyncio.Future[Any]) -> bool:
    """Kafka (or the producer) refused the record with an error that no retry fixes."""
    if not future.done() or future.cancelled():
        return False
    exc = future.exception()
    return exc is not None and not retriable(exc)


@dataclass(slots=True)
class _Undecided:
    """The records of one (topic, key) that are neither acknowledged nor journaled yet."""

    count: int
    last: asyncio.Future[None]  # resolved once the newest of them is decided


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
        self.skipped_bytes = recovery.skipped_bytes
        metrics.spool_skipped_bytes.inc(recovery.skipped_bytes)
        self._queue: list[_Append] = []
        # Records whose first copy the producer may still deliver: decided before resending.
        self._in_doubt: dict[Position, asyncio.Future[Any]] = {}
        # Only keys with a record in flight: bounded by the requests in progress.
        self._undecided: dict[tuple[str, bytes], _Undecided] = {}
        self._wake = asyncio.Event()
        self._data = asyncio.Event()
        self._empty = asyncio.Event()
        self._stop = asyncio.Event()
        self._broken: str | None = None
        self._closed = False
        self._reject_failures = 0
        self.last_error: str | None = None
        self._progress_at = time.monotonic()
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
    def stall_seconds(self) -> float:
        return self._settings.stall_seconds

    def stalled_for(self) -> float:
        """Seconds since the spool last drained a record while it holds some (0 when
        empty): how long the head has been refused or unacknowledged."""
        return time.monotonic() - self._progress_at if self._records else 0.0

    @property
    def broken(self) -> bool:
        """True after a journal write failed: spooling is off until restart."""
        return self._broken is not None

    @property
    def active(self) -> bool:
        """True while the spool holds records: new records must queue behind them."""
        return self._records > 0

    @property
    def undecided_keys(self) -> int:
        """How many (topic, key) pairs have a record not yet acknowledged or journaled."""
        return len(self._undecided)

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
        if self._records:
            info["stalled_seconds"] = round(self.stalled_for(), 1)
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

    # accepting (request handlers)

    async def accept(
        self, record: Record, producer: RecordProducer, deadline: float, *, source: str
    ) -> None:
        """Return once ``record`` is acknowledged by Kafka (``producer.send`` within
        ``deadline``) or is in the journal; raise :class:`ProduceError` when neither (a
        refusal no retry fixes, an unknown topic, a full or failed journal).

        A record goes to the producer only when the spool is empty and no earlier record
        of its topic and key is undecided: one still in its acknowledgement wait could
        fail and be journaled after this one reached Kafka, and the drainer would then
        send it behind. So it first waits for that predecessor's outcome; when the
        predecessor was journaled, the spool is active and this one is journaled behind
        it. Distinct keys never wait for each other."""
        slot = (record.topic, record.key)
        decided: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        undecided = self._undecided.get(slot)
        prior: asyncio.Future[None] | None = None
        if undecided is None:
            self._undecided[slot] = _Undecided(1, decided)
        else:
            prior, undecided.last = undecided.last, decided
            undecided.count += 1
        try:
            if prior is not None and not prior.done():
                await asyncio.wait([prior])  # not cancelled with us: later records chain on it
            if self.active:
                if not producer.topic_known(record.topic):
                    # Journaled, it would be answered 202 and never drain.
                    raise unknown_topic(record.topic)
                await self.append(record, source=source, reason="backlog")
                return
            try:
                await producer.send(
                    record.topic, record.key, record.value, record.headers, deadline
                )
            except ProduceError as exc:
                if not exc.retriable:
                    raise
                await self.append(record, source=source, reason=exc.reason, pending=exc.pending)
        finally:
            if prior is None or prior.done():
                self._decide(slot, decided)
            else:
                # Cancelled while waiting: the next record must still wait for ours.
                prior.add_done_callback(lambda _: self._decide(slot, decided))

    def _decide(self, slot: tuple[str, bytes], decided: asyncio.Future[None]) -> None:
        decided.set_result(None)
        undecided = self._undecided[slot]
        undecided.count -= 1
        if not undecided.count:
            del self._undecided[slot]

    # appending

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
        if not self._records:
            self._progress_at = time.monotonic()
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
                    await self._fail(batch, exc)
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

    async def _fail(self, batch: list[_Append], exc: Exception) -> None:
        """A write or fsync failed: the file may now hold part of ``batch``. Answer the
        batch 503 and accept nothing more until the journal is cut back to its last good
        end; records queued meanwhile are written after that end, never behind a torn
        frame. When the cut fails, spooling stays off until restart."""
        self._broken = f"spool journal write failed: {type(exc).__name__}: {exc}"
        self._metrics.spool_write_failures.inc()
        self._release_failed(batch, self._broken)
        try:
            await asyncio.to_thread(self._journal.repair, self._end)
        except OSError as repair_exc:
            self._broken += f"; cannot cut the journal back: {repair_exc}"
            log.error("%s; spooling is off until restart", self._broken)
            queued, self._queue = self._queue, []
            self._release_failed(queued, self._broken)
            return
        log.error("%s; the journal was cut back to its last good record", self._broken)
        self._broken = None

    def _release_failed(self, items: list[_Append], reason: str) -> None:
        for item in items:
            self._bytes -= len(item.frame)
            self._records -= 1
            if not item.done.done():
                item.done.set_exception(SpoolWriteError(reason))
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
            acked, futures, rejected = await self._send(entries)
            if rejected and not await self._reject(rejected):
                acked = entries.index(rejected[0])
            if acked:
                self._release(entries[:acked], resume if acked == len(entries) else None)
                await self._checkpoint()
            if acked < len(entries):
                for entry, future in zip(entries[acked:], futures[acked:], strict=False):
                    self._in_doubt[entry.position] = future
                await self._pause()

    async def _send(
        self, entries: list[Entry]
    ) -> tuple[int, list[asyncio.Future[Any]], list[Entry]]:
        """Hand ``entries`` to the producer in order. Returns how many leading ones are
        finished (acknowledged, or refused for good), the futures of those handed over,
        and the refused-for-good ones among the finished."""
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
                    try:
                        futures.append(await self._enqueue(entry.record))
                    except ProduceError as exc:
                        if exc.retriable:
                            raise
                        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                        refused.set_exception(exc)
                        futures.append(refused)
                waiting = [f for f in futures if not f.done()]
                if waiting:
                    await asyncio.wait(waiting)
        except TimeoutError:
            self.last_error = f"Kafka did not acknowledge within {self._ack_timeout:g} s"
        except ProduceError as exc:
            self.last_error = str(exc)
        finished = 0
        rejected: list[Entry] = []
        for entry, future in zip(entries, futures, strict=False):
            if _refused_for_good(future):
                rejected.append(entry)
            elif not _delivered(future):
                if future.done() and not future.cancelled():
                    self.last_error = f"Kafka refused: {type(future.exception()).__name__}"
                break
            finished += 1
        return finished, futures, rejected

    async def _reject(self, rejected: list[Entry]) -> bool:
        """Keep records Kafka will never take in the ``rejected`` file (durably) so they
        do not hold every later record; False when that file cannot be written."""
        try:
            await asyncio.to_thread(self._journal.reject, [e.record for e in rejected])
        except OSError as exc:
            self.last_error = f"cannot write the rejected file: {exc}"
            # Retried every retry_seconds until there is room: say so once a minute.
            if self._reject_failures % 60 == 0:
                log.error("spool: %s (the records stay at the journal's head)", self.last_error)
            self._reject_failures += 1
            return False
        self._reject_failures = 0
        for entry in rejected:
            log.error(
                "spool: Kafka refused a spooled record for good; kept in %s",
                self._journal.rejected_path,
                extra={"topic": entry.record.topic, "spool_position": str(entry.position)},
            )
        self._metrics.spool_rejected.inc(len(rejected))
        return True

    def _release(self, done: list[Entry], resume: Position | None) -> None:
        for entry in done:
            self._in_doubt.pop(entry.position, None)
            self._bytes -= entry.size
        self._records -= len(done)
        self._progress_at = time.monotonic()
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
