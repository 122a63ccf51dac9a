"""``python -m consumers replay``: deliver recorded events again, to chosen sinks.

Sources:

* the dead-letter topic — each dead letter goes back to the sink it failed in (when that
  sink is among ``--sinks``); records dead-lettered for breaking the contract cannot be
  replayed and are counted as skipped; unrouted ones go to every chosen sink;
* the raw topics by time range (``--since``/``--until``) or by offsets
  (``--offsets P:START-END``, both inclusive) — each event goes to the chosen sinks its
  routes send it to (``--ignore-routes``: to every chosen sink).

Replays pass through dedup: an (event id, sink) that already has a mark is skipped, and
a successful replay writes the mark, so replaying twice delivers once. Records are read
without a consumer group (nothing is committed); the range is fixed when replay starts.
They are scheduled as ``run`` schedules them (:class:`~consumers.scheduler.Scheduler`):
the events of one key of a partition in order, different keys in parallel (at most
``concurrency.max_parallel`` at once), at most ``concurrency.max_in_flight`` records
read ahead. A dead letter is ordered by its own place in the dead-letter topic, where
the dead letters of one key are in the order they were written.

``--offsets`` must lie inside what the partition holds (from its log start up to its
high watermark): a range reaching outside is an error naming both, found before
anything is delivered, rather than being cut short (a typo would go unnoticed) or
waited for. The offset look-ups are bounded by ``kafka.request_timeout_ms`` (aiokafka's
may wait indefinitely for a partition it cannot find). A record whose delivery raises
something unexpected is counted as failed for its sinks and the replay goes on, so it
always finishes; failures make the exit status 1. A ``too_large`` dead letter holds
only a reference to its original record and is skipped with a note saying which
``--offsets`` replays the original.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError

from consumers.config import ConsumerConfig
from consumers.delivery import Deliverer, Outcome
from consumers.dlq import REASON_CONTRACT, REASON_TOO_LARGE, read_dead_letter
from consumers.metrics import ConsumerMetrics
from consumers.record import TP, SourceRecord, WorkItem, make_item
from consumers.routing import Router
from consumers.scheduler import Scheduler
from webhook_common.errors import ConfigError, ContractError, WebhookGatewayError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReplayError(WebhookGatewayError):
    """The replay cannot run (the topic or partitions named do not exist, ...)."""


@dataclass(frozen=True, slots=True)
class Range:
    topic: str
    partition: int
    start: int  # first offset
    end: int  # one past the last offset

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)

    @property
    def spec(self) -> str:
        """As ``--offsets`` writes it (both ends inclusive)."""
        return f"{self.partition}:{self.start}-{self.end - 1}"


def parse_offsets(specs: Sequence[str], topic: str) -> list[Range]:
    """``P:START-END`` (both inclusive) → ranges of ``topic``."""
    out = []
    for spec in specs:
        try:
            part, _, span = spec.partition(":")
            start_s, _, end_s = span.partition("-")
            partition, start, end = int(part), int(start_s), int(end_s)
        except ValueError:
            raise ConfigError(
                f"--offsets {spec!r}: expected PARTITION:START-END, e.g. 0:100-250"
            ) from None
        if partition < 0 or start < 0 or end < start:
            raise ConfigError(f"--offsets {spec!r}: expected 0 <= START <= END and PARTITION >= 0")
        out.append(Range(topic, partition, start, end + 1))
    return out


def parse_time_arg(flag: str, value: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r}: expected an ISO 8601 time such as 2025-01-31T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, else a line
    every few seconds)."""

    def __init__(self, total: int, stream: TextIO | None = None, *, every: float = 2.0) -> None:
        self.total = total
        self.done = 0
        self.counts: Counter[str] = Counter()
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._every = every if not self._tty else 0.1
        self._last = 0.0
        self._started = time.monotonic()

    def render(self) -> str:
        width = 30
        frac = 1.0 if self.total == 0 else min(1.0, self.done / self.total)
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        rate = self.done / max(1e-6, time.monotonic() - self._started)
        return f"replay [{bar}] {self.done}/{self.total} {frac:4.0%} {rate:.0f}/s {counts}".rstrip()

    def advance(self, records: int = 1, **counts: int) -> None:
        self.done += records
        self.counts.update(counts)
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if self._tty:
            self._stream.write("\r" + self.render() + ("\n" if final else ""))
        else:
            self._stream.write(self.render() + "\n")
        self._stream.flush()

    def finish(self) -> None:
        self._draw(final=True)


@dataclass(slots=True)
class ReplayReport:
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    records: int = 0
    skipped: int = 0

    @property
    def failed(self) -> int:
        return self.outcomes[Outcome.FAILED]


@dataclass(slots=True)
class _Job:
    """One event to replay, placed where replay read it: a dead letter by its place in
    the dead-letter topic, not by its original offset. The scheduler takes a partition's
    offsets in increasing order, and the original offsets of dead letters are not: keys
    finish out of offset order, and a record is dead-lettered once per sink it failed in
    and again whenever it fails again."""

    tp: TP
    offset: int
    item: WorkItem
    targets: list[str]

    @property
    def key(self) -> str:
        return self.item.key

    @property
    def timestamp_ms(self) -> int:
        return -1  # a replay's lag is not the group's


class Replayer:
    def __init__(
        self,
        settings: ConsumerConfig,
        deliverer: Deliverer,
        metrics: ConsumerMetrics,
        sinks: Sequence[str],
        *,
        dry_run: bool = False,
        ignore_routes: bool = False,
        progress_stream: TextIO | None = None,
        consumer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.settings = settings
        self.deliverer = deliverer
        self.metrics = metrics
        self.sinks = list(sinks)
        self.dry_run = dry_run
        self.ignore_routes = ignore_routes
        self.router = Router(settings.consumers.routes)
        self.report = ReplayReport()
        self._stream = progress_stream
        self._consumer_factory = consumer_factory
        self._lookup_timeout = settings.kafka.request_timeout_ms / 1000

    def _make_consumer(self) -> Any:
        if self._consumer_factory is not None:
            return self._consumer_factory()
        kwargs = self.settings.kafka.client_kwargs()
        kwargs["client_id"] = f"{self.settings.kafka.client_id}-replay"
        return AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, isolation_level="read_committed", **kwargs
        )

    # -- planning ------------------------------------------------------------------

    async def _bounded(self, what: str, where: Sequence[TopicPartition], call: Awaitable[T]) -> T:
        """``call`` within ``kafka.request_timeout_ms``, else a ReplayError naming it."""
        try:
            return await asyncio.wait_for(call, self._lookup_timeout)
        except (TimeoutError, KafkaTimeoutError):
            names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in where)
            raise ReplayError(
                f"{what} of {names} gave no answer within {self._lookup_timeout:g} s "
                "(kafka.request_timeout_ms): does each partition exist and have a leader?"
            ) from None

    async def _offsets(
        self, consumer: Any, tps: Sequence[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Log start and high watermark of each of ``tps``."""
        begin = await self._bounded("beginning_offsets", tps, consumer.beginning_offsets(tps))
        end = await self._bounded("end_offsets", tps, consumer.end_offsets(tps))
        return begin, end

    async def _partitions(self, consumer: Any, topic: str) -> list[TopicPartition]:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            # The consumer only knows metadata of what it reads; ask the cluster.
            described = await self._bounded(
                "describe_topics", [TopicPartition(topic, -1)], self._describe(topic)
            )
            parts = {
                p["partition"]
                for t in described
                if t.get("topic") == topic and not t.get("error_code")
                for p in t.get("partitions", ())
            }
        if not parts:
            raise ReplayError(f"topic {topic!r} does not exist")
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def _describe(self, topic: str) -> Any:
        admin = AIOKafkaAdminClient(**self.settings.kafka.client_kwargs())
        await admin.start()
        try:
            return await admin.describe_topics([topic])
        finally:
            await admin.close()

    async def plan_all(self, consumer: Any, topic: str) -> list[Range]:
        tps = await self._partitions(consumer, topic)
        begin, end = await self._offsets(consumer, tps)
        return [Range(tp.topic, tp.partition, begin[tp], end[tp]) for tp in tps]

    async def plan_times(
        self,
        consumer: Any,
        topics: Sequence[str],
        since: datetime | None,
        until: datetime | None,
    ) -> list[Range]:
        out = []
        for topic in topics:
            tps = await self._partitions(consumer, topic)
            begin, end = await self._offsets(consumer, tps)
            starts = dict(begin)
            stops = dict(end)
            if since is not None:
                found = await self._bounded(
                    "offsets_for_times",
                    tps,
                    consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps}),
                )
                starts = {tp: (f.offset if f else end[tp]) for tp, f in found.items()}
            if until is not None:
                found = await self._bounded(
                    "offsets_for_times",
                    tps,
                    consumer.offsets_for_times(
                        {tp: int(until.timestamp() * 1000) + 1 for tp in tps}
                    ),
                )
                stops = {tp: (f.offset if f else end[tp]) for tp, f in found.items()}
            out += [Range(topic, tp.partition, starts[tp], stops[tp]) for tp in tps]
        return out

    async def check_ranges(self, consumer: Any, ranges: Sequence[Range]) -> None:
        """Every range names a partition that exists and lies inside what it holds."""
        for r in ranges:
            tps = await self._partitions(consumer, r.topic)
            if TopicPartition(r.topic, r.partition) not in tps:
                raise ReplayError(
                    f"--offsets: topic {r.topic!r} has no partition {r.partition} "
                    f"(it has {len(tps)})"
                )
        named = sorted({TopicPartition(r.topic, r.partition) for r in ranges})
        begin, end = await self._offsets(consumer, named)
        for r in ranges:
            tp = TopicPartition(r.topic, r.partition)
            first, stop = begin[tp], end[tp]
            where = f"--offsets {r.spec}: {r.topic}/{r.partition}"
            if first >= stop:
                raise ReplayError(f"{where} holds no records (log start and end {stop})")
            if r.start < first or r.end > stop:
                raise ReplayError(
                    f"{where} holds offsets {first}-{stop - 1} (log start {first}, high "
                    f"watermark {stop}): expected a range inside them"
                )

    # -- running ------------------------------------------------------------------

    async def run_dlq(self) -> ReplayReport:
        async def plan(consumer: Any) -> list[Range]:
            return await self.plan_all(consumer, self.settings.consumers.dlq_topic)

        return await self._run(plan, from_dlq=True)

    async def run_times(
        self, topics: Sequence[str], since: datetime | None, until: datetime | None
    ) -> ReplayReport:
        async def plan(consumer: Any) -> list[Range]:
            return await self.plan_times(consumer, topics, since, until)

        return await self._run(plan, from_dlq=False)

    async def run_ranges(self, ranges: Sequence[Range]) -> ReplayReport:
        async def plan(consumer: Any) -> list[Range]:
            await self.check_ranges(consumer, ranges)
            return list(ranges)

        return await self._run(plan, from_dlq=False)

    async def _run(
        self, plan: Callable[[Any], Awaitable[list[Range]]], *, from_dlq: bool
    ) -> ReplayReport:
        consumer = self._make_consumer()
        await consumer.start()
        try:
            ranges = [r for r in await plan(consumer) if r.size > 0]
            progress = Progress(sum(r.size for r in ranges), self._stream)

            async def deliver(job: _Job) -> None:
                await self._deliver(job, progress)

            concurrency = self.settings.consumers.concurrency
            scheduler: Scheduler[_Job] = Scheduler(deliver, concurrency.max_parallel)
            try:
                for r in ranges:
                    await self._read_range(consumer, scheduler, r, from_dlq, progress)
                await scheduler.wait_idle(None, math.inf)
            finally:
                await scheduler.drop(list(scheduler.partitions))
            progress.finish()
        finally:
            await consumer.stop()
        return self.report

    async def _read_range(
        self,
        consumer: Any,
        scheduler: Scheduler[_Job],
        r: Range,
        from_dlq: bool,
        progress: Progress,
    ) -> None:
        at: TP = (r.topic, r.partition)
        if at in scheduler.partitions:
            # An earlier range of this partition: the scheduler takes a partition's
            # offsets in increasing order, so that range is finished and forgotten first.
            await scheduler.wait_idle([at], math.inf)
            await scheduler.drop([at])
        scheduler.assign(at)
        window = self.settings.consumers.concurrency.max_in_flight
        tp = TopicPartition(*at)
        consumer.assign([tp])
        consumer.seek(tp, r.start)
        position = r.start
        while position < r.end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            records = batch.get(tp, [])
            if not records:
                # Offsets may have gaps (transaction markers, compaction) up to the end.
                position = await consumer.position(tp)
                if position >= r.end:
                    break
                continue
            for rec in records:
                if rec.offset >= r.end:
                    position = r.end
                    break
                position = rec.offset + 1
                job = self._job(rec, from_dlq, progress)
                if job is not None:
                    scheduler.submit(job)
                    await scheduler.wait_below(window)

    def _job(self, rec: Any, from_dlq: bool, progress: Progress) -> _Job | None:
        """What to replay of a record read, or None (counted as skipped)."""
        self.report.records += 1
        if from_dlq:
            try:
                letter = read_dead_letter(rec)
            except ContractError:
                self._skip(progress, "not_dead_letter")
                return None
            if letter.reason == REASON_CONTRACT:
                self._skip(progress, "contract")
                return None
            if letter.reason == REASON_TOO_LARGE:
                original = letter.original
                log.warning(
                    "dead letter %s/%d@%d is only a reference (the record was too large for "
                    "the dead-letter topic): replay the original with "
                    "--topic %s --offsets %d:%d-%d",
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    original.topic,
                    original.partition,
                    original.offset,
                    original.offset,
                )
                self._skip(progress, "too_large")
                return None
            targets = [s for s in self.sinks if letter.sink in ("", s)]
            item = make_item(letter.original)
        else:
            item = make_item(SourceRecord.from_consumer_record(rec))
            targets = self.sinks
        if item.event is None:
            self._skip(progress, "contract")
            return None
        if not from_dlq and not self.ignore_routes:
            routed = set(self.router.sinks_for(item.event))
            targets = [s for s in targets if s in routed]
        if not targets:
            self._skip(progress, "not_for_sinks")
            return None
        return _Job((rec.topic, rec.partition), rec.offset, item, targets)

    def _skip(self, progress: Progress, why: str) -> None:
        self.report.skipped += 1
        progress.advance(**{f"skipped_{why}": 1})

    async def _deliver(self, job: _Job, progress: Progress) -> None:
        event = job.item.event
        assert event is not None
        results = await asyncio.gather(
            *(
                self.deliverer.deliver(event, job.item.record, s, dry_run=self.dry_run)
                for s in job.targets
            ),
            return_exceptions=True,
        )
        counts: dict[str, int] = {}
        for sink, result in zip(job.targets, results, strict=True):
            if isinstance(result, BaseException):
                # Raised past the deliverer, which handles what sinks raise: a bug. The
                # scheduler would retry it every second forever; a replay reports it.
                log.error(
                    "replaying %s/%d@%d to sink %s failed",
                    job.item.record.topic,
                    job.item.record.partition,
                    job.item.record.offset,
                    sink,
                    exc_info=result,
                )
                outcome = Outcome.FAILED
            else:
                outcome = result
            self.report.outcomes[outcome] += 1
            self.metrics.replayed.labels(sink, outcome).inc()
            counts[outcome.value] = counts.get(outcome.value, 0) + 1
        progress.advance(**counts)


def check_sink_names(names: Sequence[str], configured: Mapping[str, Any]) -> list[str]:
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise ConfigError(
            f"--sinks: unknown sink(s) {', '.join(unknown)}: expected names from "
            f"consumers.sinks ({', '.join(sorted(configured))})"
        )
    if not names:
        raise ConfigError("--sinks: expected at least one sink name")
    return list(dict.fromkeys(names))
