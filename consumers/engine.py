"""The consumer engine of ``run``: fetch from the consumer group, schedule, commit.

Fetched records go to the key-ordered, key-parallel :class:`~consumers.scheduler.Scheduler`
(at most ``concurrency.max_parallel`` deliveries at once), which hands each to the
:class:`~consumers.processor.Processor`. Offsets are committed up to the lowest
unfinished offset of each partition (:mod:`consumers.offsets`): periodically, when
partitions are revoked, and at shutdown. Fetching pauses for a partition that holds
``per_partition`` unfinished records, and stops taking records when ``max_in_flight``
is reached: it waits until a tenth of the window is free (pausing every partition only
when that takes longer than a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumers.config import ConsumersSection
from consumers.delivery import Deliverer
from consumers.metrics import ConsumerMetrics
from consumers.processor import Processor
from consumers.record import TP, SourceRecord, WorkItem, make_item
from consumers.routing import Router
from consumers.scheduler import Scheduler
from consumers.sinks import Sink
from webhook_common.config import KafkaSettings

log = logging.getLogger(__name__)

# A full window is refilled once this fraction of it is free: one fetch of many records
# rather than one per finished record.
_REFILL_DIVISOR = 10
# How long a full window waits for room before pausing every partition and polling.
_FULL_WAIT = 1.0


class Engine:
    """Runs the group consumer until :meth:`stop`; then drains, commits and returns."""

    def __init__(
        self,
        config: ConsumersSection,
        kafka: KafkaSettings,
        sinks: Mapping[str, Sink],
        deliverer: Deliverer,
        metrics: ConsumerMetrics,
        *,
        group: str | None = None,
        consumer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.kafka = kafka
        self.group = group or config.group
        self.sinks = sinks
        self.deliverer = deliverer
        self.metrics = metrics
        self._consumer_factory = consumer_factory
        processor = Processor(config, Router(config.routes), deliverer, metrics)
        self.scheduler: Scheduler[WorkItem] = Scheduler(
            processor, config.concurrency.max_parallel, on_change=self._on_finished
        )
        # Set when the window has room again (see _wait_for_room).
        self._room = asyncio.Event()
        limit = config.concurrency.max_in_flight
        self._refill_at = limit - max(1, limit // _REFILL_DIVISOR)
        self._consumer: Any = None
        self._assigned: set[TP] = set()
        self._stopping = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self.started = False
        self.last_loop = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Ask the engine to stop fetching and shut down gracefully."""
        self._stopping.set()

    @property
    def ready(self) -> bool:
        return self.started and not self._stopping.is_set() and self.deliverer.healthy

    def _make_consumer(self) -> Any:
        if self._consumer_factory is not None:
            return self._consumer_factory()
        kwargs = self.kafka.client_kwargs()
        kwargs["client_id"] = f"{self.kafka.client_id}-consumer"
        return AIOKafkaConsumer(
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.config.auto_offset_reset,
            isolation_level="read_committed",
            max_poll_records=min(500, self.config.concurrency.max_in_flight),
            **kwargs,
        )

    async def run(self) -> None:
        consumer = self._consumer = self._make_consumer()
        consumer.subscribe(topics=list(self.config.topics), listener=_Listener(self))
        await consumer.start()
        self.started = True
        commit_task = asyncio.create_task(self._commit_periodically(), name="commit")
        try:
            await self._fetch_loop()
        finally:
            commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commit_task
            await self._shutdown()

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        limits = self.config.concurrency
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                self.last_loop = time.monotonic()
                full = self.scheduler.in_flight >= limits.max_in_flight
                if full and await self._wait_for_room(stop_wait):
                    continue
                self._apply_pause()
                room = max(1, limits.max_in_flight - self.scheduler.in_flight)
                fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=200, max_records=room))
                await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    # Stopping: records of an unfinished fetch are simply not taken; the
                    # committed offset is below them anyway.
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fetch
                    break
                batch = fetch.result()
                for tp, records in batch.items():
                    key = (tp.topic, tp.partition)
                    if key not in self._assigned:
                        continue  # revoked while the fetch was under way
                    self.metrics.consumed.labels(tp.topic).inc(len(records))
                    submit = self.scheduler.submit
                    for rec in records:
                        submit(make_item(SourceRecord.from_consumer_record(rec)))
                self.metrics.in_flight.set(self.scheduler.in_flight)
                self._update_lag()
        finally:
            stop_wait.cancel()

    def _on_finished(self) -> None:
        if self.scheduler.in_flight <= self._refill_at:
            self._room.set()

    async def _wait_for_room(self, stop_wait: asyncio.Future[Any]) -> bool:
        """The window is full: wait (at most ``_FULL_WAIT`` seconds) until a tenth of it
        is free, then fetch that much at once. True when there is room (or stopping).

        Not pausing the partitions meanwhile matters: aiokafka throws away what it has
        buffered for a paused partition and fetches it again after ``resume`` (its
        ``check_assignment``), which left the window empty for whole round trips. Only
        a window that stays full longer pauses everything and polls as before, because
        aiokafka leaves the group when ``getmany`` is not called for
        ``max_poll_interval_ms``.
        """
        self._room.clear()
        if self.scheduler.in_flight <= self._refill_at:
            return True
        room = asyncio.ensure_future(self._room.wait())
        try:
            await asyncio.wait(
                {room, stop_wait}, timeout=_FULL_WAIT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            room.cancel()
        return self._room.is_set() or stop_wait.done()

    def _apply_pause(self) -> None:
        consumer = self._consumer
        limits = self.config.concurrency
        full = self.scheduler.in_flight >= limits.max_in_flight
        pause, resume = [], []
        paused = {(tp.topic, tp.partition) for tp in consumer.paused()}
        for tp in self._assigned:
            want = full or self.scheduler.partition_in_flight(tp) >= limits.per_partition
            if want and tp not in paused:
                pause.append(TopicPartition(*tp))
            elif not want and tp in paused:
                resume.append(TopicPartition(*tp))
        if pause:
            consumer.pause(*pause)
        if resume:
            consumer.resume(*resume)
        self.metrics.paused.set(len(paused) + len(pause) - len(resume))
        self.metrics.in_flight.set(self.scheduler.in_flight)

    def _update_lag(self) -> None:
        now_ms = time.time() * 1000
        for tp in self._assigned:
            high = self._consumer.highwater(TopicPartition(*tp))
            part = self.scheduler.partitions.get(tp)
            if high is None or part is None:
                continue
            point = part.offsets.commit_point()
            if point is None:
                point = part.offsets.committed if part.offsets.committed is not None else high
            lag = max(0, high - point)
            labels = (tp[0], str(tp[1]))
            self.metrics.lag.labels(*labels).set(lag)
            oldest = part.offsets.oldest_timestamp_ms()
            if oldest is not None:
                self.metrics.lag_seconds.labels(*labels).set(max(0.0, (now_ms - oldest) / 1000))
            elif lag == 0:
                self.metrics.lag_seconds.labels(*labels).set(0)
            # Else records wait unfetched (paused): the last age stands until they come.

    # -- commits -----------------------------------------------------------------

    async def _commit_periodically(self) -> None:
        interval = self.config.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.commit()

    async def commit(self, only: Iterable[TP] | None = None) -> None:
        async with self._commit_lock:
            points = self.scheduler.commit_points(only)
            if not points:
                return
            offsets = {TopicPartition(*tp): off for tp, off in points.items()}
            try:
                await self._consumer.commit(offsets)
            except (KafkaError, AssertionError) as exc:
                # Rebalancing or coordinator moving: the next commit carries the same
                # (or later) offsets, and anything uncommitted is re-read and deduplicated.
                self.metrics.commits.labels("error").inc()
                log.warning("offset commit failed: %s: %s", type(exc).__name__, exc)
                return
            self.scheduler.committed(points)
            self.metrics.commits.labels("success").inc()

    # -- rebalance ---------------------------------------------------------------

    async def on_revoked(self, tps: list[TP]) -> None:
        revoked = [tp for tp in tps if tp in self._assigned]
        self._assigned.difference_update(revoked)
        if not revoked:
            return
        # Finish what is under way (bounded), so the next owner redoes as little as possible.
        drain = min(self.config.shutdown_grace_seconds, 10.0)
        await self.scheduler.wait_idle(revoked, drain)
        await self.commit(revoked)
        await self.scheduler.drop(revoked)
        for topic, partition in revoked:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(topic, str(partition))
            with contextlib.suppress(KeyError):
                self.metrics.lag_seconds.remove(topic, str(partition))
        log.info("partitions revoked: %s", _fmt(revoked))

    def on_assigned(self, tps: list[TP]) -> None:
        for tp in tps:
            self.scheduler.assign(tp)
            self._assigned.add(tp)
        log.info("partitions assigned: %s", _fmt(tps))

    # -- shutdown ----------------------------------------------------------------

    async def _shutdown(self) -> None:
        consumer = self._consumer
        assigned = list(self._assigned)
        if assigned:
            consumer.pause(*(TopicPartition(*tp) for tp in assigned))
        grace = self.config.shutdown_grace_seconds
        in_flight = self.scheduler.in_flight
        if not await self.scheduler.wait_idle(None, grace):
            log.warning(
                "shutdown grace of %.1fs over with %d record(s) unfinished (of %d); "
                "they will be re-read and deduplicated",
                grace,
                self.scheduler.in_flight,
                in_flight,
            )
        await self.commit()
        await self.scheduler.drop(list(self.scheduler.partitions))
        self._assigned.clear()
        await consumer.stop()
        self.metrics.in_flight.set(0)
        log.info("consumer stopped")


def _fmt(tps: Iterable[TP]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in sorted(tps)) or "none"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka awaits these during a rebalance, before the group moves on."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._engine.on_revoked([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._engine.on_assigned([(tp.topic, tp.partition) for tp in assigned])
