"""Delivering one event to one sink: dedup check, attempts with backoff, mark, DLQ.

Used by the engine for live traffic and by ``replay``. A sink with ``send_batch`` gets
the first attempts of deliveries that are ready at the same moment (different keys: one
key has one delivery at a time) in one call (:class:`~consumers.batching.Batcher`); each
delivery still waits for its own outcome, and marks its own dedup entry only after the
call succeeded. When the batch fails, each of its events is sent again on its own, so
the failure of one event is that event's outcome, not its neighbours'. Only cancellation escapes
:meth:`Deliverer.deliver`: sink errors become retries or dead letters, and failures of
the dedup store or the DLQ producer are waited out (with backoff) because going on
without them would either duplicate a delivery or lose a record. A dead letter too
large for the DLQ is the exception: it would never fit, so a reference to the original
record is written instead (:mod:`consumers.dlq`). A ``CancelledError`` out of a sink
while the delivery itself is not being cancelled is a failed attempt like any other.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum, StrEnum
from typing import TypeVar

from prometheus_client import Counter, Histogram

from consumers.batching import Batcher
from consumers.dedup import DedupStore
from consumers.dlq import (
    REASON_EXHAUSTED,
    REASON_PERMANENT,
    REASON_TOO_LARGE,
    DeadLetterWriter,
    event_id,
)
from consumers.event import Event
from consumers.metrics import ConsumerMetrics
from consumers.record import SourceRecord
from consumers.retry import SinkRetry
from consumers.sinks import BatchSink, Sink, SinkError
from webhook_common.contract import IdOrigin, parse_time
from webhook_common.errors import WebhookGatewayError
from webhook_common.tracing import Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")


class Outcome(StrEnum):
    """What became of one event for one sink (the ``outcome`` label of replayed_total)."""

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"  # no DLQ writer (replay): the caller reports it
    DRY_RUN = "dry_run"


class AttemptOutcome(StrEnum):
    """How one call of a sink ended (the ``outcome`` label of deliveries_total)."""

    SUCCESS = "success"
    RETRIABLE_ERROR = "retriable_error"
    PERMANENT_ERROR = "permanent_error"


class InfraCall(Enum):
    """A call to the dedup store or the DLQ producer, which is repeated until it succeeds.

    Each is (its name in logs, the ``operation`` label of dedup_errors_total or None when
    it is not a call to the dedup store).
    """

    DEDUP_CHECK = ("dedup_check", "check")
    DEDUP_MARK = ("dedup_mark", "mark")
    DLQ_PRODUCE = ("dlq_produce", None)

    def __init__(self, text: str, dedup_operation: str | None) -> None:
        self.text = text
        self.dedup_operation = dedup_operation


def _retriable(exc: BaseException) -> bool:
    # The Sink protocol: SinkError says; any other exception is treated as retriable.
    if isinstance(exc, WebhookGatewayError):
        return exc.retriable
    return True


def _cancelling() -> bool:
    """Whether the running task is being cancelled (shutdown, a revoked partition), as
    opposed to a ``CancelledError`` that a library raised on its own."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Fallback:
    """A batch's answer to each of its events when the batch failed: send it alone."""


FALLBACK = _Fallback()
BatchOutcome = Exception | _Fallback | None


def _batch_runner(
    sink: BatchSink, metrics: ConsumerMetrics
) -> Callable[[list[Event]], Awaitable[list[BatchOutcome]]]:
    size = metrics.batch_size.labels(sink.name)
    failures = metrics.batch_failures.labels(sink.name)

    async def run(events: list[Event]) -> list[BatchOutcome]:
        alone = len(events) == 1
        try:
            if alone:
                await sink.send(events[0])
            else:
                size.observe(len(events))
                await sink.send_batch(events)
        except asyncio.CancelledError as cancelled:
            if _cancelling():
                raise
            failure: Exception = SinkError(
                f"the sink raised {type(cancelled).__name__} without being cancelled",
                retriable=True,
            )
        except Exception as exc:
            failure = exc
        else:
            return [None] * len(events)
        if alone:
            return [failure]
        failures.inc()
        log.debug(
            "sink %s: a batch of %d events failed (%s); sending each alone",
            sink.name,
            len(events),
            _describe(failure),
        )
        return [FALLBACK] * len(events)

    return run


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Deliverer:
    def __init__(
        self,
        sinks: Mapping[str, Sink],
        dedup: DedupStore,
        retries: Mapping[str, SinkRetry],
        metrics: ConsumerMetrics,
        dlq: DeadLetterWriter | None,
        *,
        infra_backoff_max: float = 5.0,
        clock: Callable[[], float] = time.time,
        dedup_ttl: Callable[[str, IdOrigin], int] | None = None,
        hold_on_outage: bool = True,
        tracer: Tracing | None = None,
        max_batch: int = 1,
    ) -> None:
        self.sinks = sinks
        self.dedup = dedup
        self.retries = retries
        self.metrics = metrics
        self.dlq = dlq
        self._infra_max = infra_backoff_max
        self._clock = clock
        # (source, id origin) -> seconds a mark is kept; None: the store's own window.
        self._ttl_for = dedup_ttl
        self._hold = hold_on_outage
        self._rng = random.Random()
        # False while the dedup store or the DLQ cannot be reached (for /readyz).
        self.healthy = True
        # Label children by sink, resolved on first use: `.labels()` per event costs a
        # lock and a validation (3-4 % of the consumer's CPU in the profile).
        self._durations: dict[str, Histogram] = {}
        self._successes: dict[str, Counter] = {}
        self._end_to_end: dict[str, Histogram] = {}
        self._batchers: dict[str, Batcher[Event, BatchOutcome]] = {
            name: Batcher(_batch_runner(sink, metrics), max_batch)
            for name, sink in sinks.items()
            if max_batch > 1 and isinstance(sink, BatchSink)
        }
        self.tracer = tracer
        if tracer is not None:
            # Chosen once here: without tracing a delivery runs exactly as it always did.
            self.deliver = self._deliver_traced  # type: ignore[method-assign]

    async def _persist(
        self, call: InfraCall, op: Callable[[], Awaitable[T]], failed: Exception | None = None
    ) -> T:
        """Run an infrastructure call until it succeeds, backing off (full jitter).

        ``failed``: the caller's own first attempt failed with it (the fast path that
        saves a closure and a coroutine per event when nothing fails).
        """
        failures = 0
        while True:
            if failed is None:
                try:
                    result = await op()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed = exc
            if failed is not None:
                failures += 1
                self.healthy = False
                if call.dedup_operation is not None:
                    self.metrics.dedup_errors.labels(call.dedup_operation).inc()
                if failures == 1 or failures % 20 == 0:
                    log.warning("%s failed (%s), retrying", call.text, _describe(failed))
                failed = None
                ceiling = min(self._infra_max, 0.05 * 2 ** min(failures, 16))
                await asyncio.sleep(self._rng.uniform(0.0, ceiling))
                continue
            self.healthy = True
            return result

    async def _deliver_traced(
        self, event: Event, record: SourceRecord, sink_name: str, *, dry_run: bool = False
    ) -> Outcome:
        """:meth:`deliver` in a CONSUMER span, child of and linked to the record's trace
        context; its attempts are events of the span."""
        tracer = self.tracer
        assert tracer is not None
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "deliver",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "cloudevents.event_id": event.id,
            "cloudevents.event_type": event.type,
            "webhookgw.source": event.source,
            "webhookgw.sink": sink_name,
        }
        name = f"deliver {sink_name}"
        with tracer.consumer_span(name, event.traceparent, event.tracestate, attributes) as span:
            outcome = await Deliverer.deliver(self, event, record, sink_name, dry_run=dry_run)
            span.set_attribute("webhookgw.outcome", outcome.value)
            if outcome is Outcome.DEAD_LETTERED or outcome is Outcome.FAILED:
                tracer.fail(span, outcome.value)
            return outcome

    async def deliver(
        self, event: Event, record: SourceRecord, sink_name: str, *, dry_run: bool = False
    ) -> Outcome:
        sink = self.sinks[sink_name]
        retry = self.retries[sink_name]
        m = self.metrics
        dedup = self.dedup
        try:
            seen = await dedup.seen(event.id, sink_name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            seen = await self._persist(
                InfraCall.DEDUP_CHECK, lambda: dedup.seen(event.id, sink_name), failed=exc
            )
        else:
            self.healthy = True
        if seen:
            m.duplicates.labels(sink_name).inc()
            return Outcome.DUPLICATE
        if dry_run:
            return Outcome.DRY_RUN
        attempts = 0
        circuit = retry.circuit
        failing_since: float | None = None  # when this event's current failures began
        ttl = self._dedup_ttl(event)
        batcher = self._batchers.get(sink_name)
        retry.budget.deposit()
        while True:
            probe = await circuit.admit()
            attempts += 1
            if attempts > 1:
                m.retries.labels(sink_name).inc()
            started = time.perf_counter()
            try:
                try:
                    if batcher is not None and attempts == 1:
                        # A retry goes alone: its backoff is its own.
                        outcome = await batcher.submit(event)
                        if isinstance(outcome, Exception):
                            raise outcome
                        if outcome is not None:  # the batch failed: this event alone
                            await sink.send(event)
                    else:
                        await sink.send(event)
                except asyncio.CancelledError as cancelled:
                    if _cancelling():
                        raise
                    # Escaping, it would end the scheduler's worker with the key's later
                    # records still queued behind this one, never to be delivered.
                    raise SinkError(
                        f"the sink raised {type(cancelled).__name__} without being cancelled",
                        retriable=True,
                    ) from None
            except asyncio.CancelledError:
                if probe:
                    circuit.abandon_probe()
                raise
            except Exception as exc:
                m.delivery_duration.labels(sink_name).observe(time.perf_counter() - started)
                retriable = _retriable(exc)
                failure = (
                    AttemptOutcome.RETRIABLE_ERROR if retriable else AttemptOutcome.PERMANENT_ERROR
                )
                m.deliveries.labels(sink_name, failure).inc()
                if self.tracer is not None:
                    # The type only: a message may quote what a span must not hold.
                    self.tracer.add_event(
                        "attempt failed",
                        {
                            "webhookgw.attempt": attempts,
                            "error.type": type(exc).__qualname__,
                            "webhookgw.retriable": retriable,
                        },
                    )
                if retriable:
                    circuit.failure()
                    if failing_since is None:
                        failing_since = circuit.now()
                else:
                    circuit.answered()  # the sink is up; this event is refused
                if retriable and not retry.exhausted(attempts):
                    log.debug(
                        "sink %s failed on %s (attempt %d): %s",
                        sink_name,
                        event.id,
                        attempts,
                        _describe(exc),
                    )
                    await retry.pause_before_retry(attempts)
                    continue
                if (
                    retriable
                    and self._hold
                    and failing_since is not None
                    and not circuit.answered_since(failing_since)
                ):
                    # The sink answered nothing since this event began failing: nothing
                    # tells the event from an outage, so it waits (in Kafka, with the
                    # circuit open) and starts its attempts again, instead of becoming a
                    # dead letter. It is dead-lettered once the sink answers others.
                    log.warning(
                        "sink %s: event %s failed %d time(s) while the sink answered "
                        "nothing else; holding it behind the open circuit: %s",
                        sink_name,
                        event.id,
                        attempts,
                        _describe(exc),
                    )
                    m.held.labels(sink_name).inc()
                    if self.tracer is not None:
                        self.tracer.add_event("held behind open circuit", {})
                    circuit.trip()
                    attempts = 0
                    failing_since = None
                    continue
                reason = REASON_PERMANENT if not retriable else REASON_EXHAUSTED
                log.warning(
                    "sink %s gave up on event %s (%s/%d@%d) after %d attempt(s): %s",
                    sink_name,
                    event.id,
                    record.topic,
                    record.partition,
                    record.offset,
                    attempts,
                    _describe(exc),
                )
                return await self.dead_letter(
                    record,
                    reason=reason,
                    sink=sink_name,
                    attempts=attempts,
                    error=_describe(exc),
                )
            circuit.answered()
            duration = self._durations.get(sink_name)
            if duration is None:
                duration = self._durations[sink_name] = m.delivery_duration.labels(sink_name)
            duration.observe(time.perf_counter() - started)
            success = self._successes.get(sink_name)
            if success is None:
                success = self._successes[sink_name] = m.deliveries.labels(
                    sink_name, AttemptOutcome.SUCCESS
                )
            success.inc()
            if self.tracer is not None:
                self.tracer.add_event("delivered", {"webhookgw.attempt": attempts})
            self._observe_latency(event, sink_name)
            try:
                await dedup.mark(event.id, sink_name, ttl)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._persist(
                    InfraCall.DEDUP_MARK, lambda: dedup.mark(event.id, sink_name, ttl), failed=exc
                )
            else:
                self.healthy = True
            return Outcome.DELIVERED

    async def dead_letter(
        self, record: SourceRecord, *, reason: str, sink: str, attempts: int, error: str
    ) -> Outcome:
        dlq = self.dlq
        if dlq is None:
            # The sink's error was logged when it gave up; this says the event is lost
            # to that sink unless someone acts (the caller reports FAILED).
            log.error(
                "sink %s: event %s (%s/%d@%d) was not delivered (reason %s) and there is "
                "no dead-letter topic to write it to",
                sink or "-",
                event_id(record) or "-",
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
            self.metrics.undelivered.labels(sink or "-", reason).inc()
            return Outcome.FAILED
        written = await self._persist(
            InfraCall.DLQ_PRODUCE,
            lambda: dlq.send(
                record,
                reason=reason,
                sink=sink,
                attempts=attempts,
                error=error,
                now=self._clock(),
            ),
        )
        if written == REASON_TOO_LARGE:
            log.warning(
                "dead letter of event %s (%s/%d@%d, %d bytes) for sink %s is too large for "
                "the dead-letter topic %s: wrote a reference to the original record instead",
                event_id(record) or "-",
                record.topic,
                record.partition,
                record.offset,
                len(record.value or b""),
                sink or "-",
                dlq.topic,
            )
        self.metrics.dead_lettered.labels(sink or "-", written).inc()
        return Outcome.DEAD_LETTERED

    def _dedup_ttl(self, event: Event) -> int | None:
        return None if self._ttl_for is None else self._ttl_for(event.source, event.id_origin)

    def _observe_latency(self, event: Event, sink: str) -> None:
        try:
            sent = parse_time(event.time).timestamp()
        except WebhookGatewayError:
            return
        child = self._end_to_end.get(sink)
        if child is None:
            child = self._end_to_end[sink] = self.metrics.end_to_end.labels(sink)
        child.observe(max(0.0, self._clock() - sent))
