"""One event to one sink: retries, dead letters, and when the dedup mark is written."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest

from consumers.config import RetryConfig
from consumers.dedup import DedupUnavailable, MemoryDedupStore
from consumers.delivery import AttemptOutcome, Deliverer, InfraCall, Outcome
from consumers.dlq import DeadLetterWriter, read_dead_letter
from consumers.event import Event
from consumers.metrics import ConsumerMetrics
from consumers.record import SourceRecord, make_item
from consumers.retry import SinkRetry
from consumers.sinks import SinkError
from tests.consumers.fakes import FakeProducer, FakeSink, fresh_registry, record


def _deliverer(
    sink: FakeSink,
    dedup: object | None = None,
    producer: FakeProducer | None = None,
    max_attempts: int = 4,
) -> tuple[Deliverer, FakeProducer, ConsumerMetrics, MemoryDedupStore]:
    store = MemoryDedupStore(3600, 100)
    producer = producer or FakeProducer()
    metrics = ConsumerMetrics(fresh_registry())
    d = Deliverer(
        {sink.name: sink},
        dedup if dedup is not None else store,  # type: ignore[arg-type]
        {sink.name: SinkRetry(RetryConfig(initial_ms=1, max_ms=5, max_attempts=max_attempts))},
        metrics,
        DeadLetterWriter(producer, "dlq", "grp"),
        infra_backoff_max=0.01,
    )
    return d, producer, metrics, store


def _ev(offset: int = 0) -> tuple[Event, object]:
    item = make_item(record(offset, "k"))
    assert item.event is not None
    return item.event, item.record


async def test_retriable_errors_are_retried_then_delivered_and_marked() -> None:
    sink = FakeSink("s", fail=lambda e, n: SinkError("503", retriable=True) if n < 3 else None)
    d, producer, metrics, store = _deliverer(sink)
    ev, rec = _ev()
    assert await d.deliver(ev, rec, "s") is Outcome.DELIVERED  # type: ignore[arg-type]
    assert sink.calls == 3
    assert await store.seen(ev.id, "s")
    assert producer.sent == []
    assert metrics.retries.labels("s")._value.get() == 2
    assert metrics.deliveries.labels("s", AttemptOutcome.RETRIABLE_ERROR)._value.get() == 2
    assert metrics.deliveries.labels("s", AttemptOutcome.SUCCESS)._value.get() == 1


async def test_non_retriable_error_dead_letters_at_once_without_a_mark() -> None:
    sink = FakeSink("s", fail=lambda e, n: SinkError("400 bad request", retriable=False))
    d, producer, metrics, store = _deliverer(sink)
    ev, rec = _ev(5)
    assert await d.deliver(ev, rec, "s") is Outcome.DEAD_LETTERED  # type: ignore[arg-type]
    assert sink.calls == 1
    assert not await store.seen(ev.id, "s")  # a replay must still be able to deliver it
    sent = producer.sent[0]
    assert sent["topic"] == "dlq"
    assert (sent["key"], sent["value"]) == (b"k", b'{"a": 1}')
    headers = dict(sent["headers"])
    assert headers["dlq_reason"] == b"permanent"
    assert headers["dlq_sink"] == b"s"
    assert headers["dlq_attempts"] == b"1"
    assert headers["dlq_original_topic"] == b"raw"
    assert headers["dlq_original_partition"] == b"0"
    assert headers["dlq_original_offset"] == b"5"
    assert headers["dlq_group"] == b"grp"
    assert b"400 bad request" in headers["dlq_error"]
    assert headers["ce_id"] == ev.id.encode()  # original headers kept
    assert metrics.dead_lettered.labels("s", "permanent")._value.get() == 1


async def test_exhausted_retries_dead_letter_with_attempt_count() -> None:
    # Plain exceptions retry. Only this event fails: the sink delivers another one
    # meanwhile, so the failure is the event's own (an outage would be held instead).
    sink = FakeSink("s", fail=lambda e, n: TimeoutError("slow") if e.offset == 0 else None)
    d, producer, _, _ = _deliverer(sink, max_attempts=3)
    ev, rec = _ev()
    other, other_rec = _ev(1)
    failing = asyncio.create_task(d.deliver(ev, rec, "s"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert await d.deliver(other, other_rec, "s") is Outcome.DELIVERED  # type: ignore[arg-type]
    assert await failing is Outcome.DEAD_LETTERED
    assert sink.calls == 4
    headers = dict(producer.sent[0]["headers"])
    assert (headers["dlq_reason"], headers["dlq_attempts"]) == (b"exhausted", b"3")


async def test_dlq_produce_failure_is_retried_until_acked() -> None:
    sink = FakeSink("s", fail=lambda e, n: SinkError("no", retriable=False))
    d, producer, _, _ = _deliverer(sink, producer=FakeProducer(fail_times=2))
    ev, rec = _ev()
    assert await d.deliver(ev, rec, "s") is Outcome.DEAD_LETTERED  # type: ignore[arg-type]
    assert len(producer.sent) == 1


async def test_dead_letter_round_trip_strips_old_dlq_headers() -> None:
    sink = FakeSink("s", fail=lambda e, n: SinkError("no", retriable=False))
    d, producer, _, _ = _deliverer(sink)
    ev, rec = _ev(9)
    await d.deliver(ev, rec, "s")  # type: ignore[arg-type]
    sent = producer.sent[0]

    class Rec:
        topic, partition, offset = "dlq", 2, 40
        key, value, headers = sent["key"], sent["value"], sent["headers"]

    letter = read_dead_letter(Rec)
    assert (letter.reason, letter.sink, letter.attempts) == ("permanent", "s", 1)
    assert (letter.original.topic, letter.original.offset) == ("raw", 9)
    assert all(not k.startswith("dlq_") for k, _ in letter.original.headers)
    assert letter.original.headers == rec.headers  # type: ignore[attr-defined]


class FlakyStore(MemoryDedupStore):
    def __init__(self, check_failures: int, mark_failures: int) -> None:
        super().__init__(3600, 100)
        self.check_failures = check_failures
        self.mark_failures = mark_failures

    async def seen(self, event_id: str, sink: str) -> bool:
        if self.check_failures:
            self.check_failures -= 1
            raise DedupUnavailable("redis down")
        return await super().seen(event_id, sink)

    async def mark(self, event_id: str, sink: str, ttl_seconds: int | None = None) -> None:
        if self.mark_failures:
            self.mark_failures -= 1
            raise DedupUnavailable("redis down")
        await super().mark(event_id, sink, ttl_seconds)


async def test_dedup_outage_waits_instead_of_delivering_unchecked() -> None:
    sink = FakeSink("s")
    store = FlakyStore(check_failures=3, mark_failures=2)
    d, _, metrics, _ = _deliverer(sink, dedup=store)
    ev, rec = _ev()
    assert await d.deliver(ev, rec, "s") is Outcome.DELIVERED  # type: ignore[arg-type]
    assert sink.calls == 1  # the sink saw it once, after the store answered
    assert await store.seen(ev.id, "s")
    assert metrics.dedup_errors.labels(InfraCall.DEDUP_CHECK.dedup_operation)._value.get() == 3
    assert metrics.dedup_errors.labels(InfraCall.DEDUP_MARK.dedup_operation)._value.get() == 2
    assert d.healthy


async def test_dedup_outage_blocks_while_it_lasts() -> None:
    sink = FakeSink("s")
    store = FlakyStore(check_failures=10**9, mark_failures=0)
    d, _, _, _ = _deliverer(sink, dedup=store)
    ev, rec = _ev()
    task = asyncio.create_task(d.deliver(ev, rec, "s"))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert not task.done()
    assert sink.calls == 0
    assert not d.healthy
    task.cancel()


async def test_existing_mark_skips_and_dry_run_does_not_send() -> None:
    sink = FakeSink("s")
    d, _, metrics, store = _deliverer(sink)
    ev, rec = _ev()
    assert await d.deliver(ev, rec, "s", dry_run=True) is Outcome.DRY_RUN  # type: ignore[arg-type]
    assert sink.calls == 0
    await store.mark(ev.id, "s")
    assert await d.deliver(ev, rec, "s") is Outcome.DUPLICATE  # type: ignore[arg-type]
    assert sink.calls == 0
    assert metrics.duplicates.labels("s")._value.get() == 1


def test_consumed_headers_are_kept_as_read_with_none_as_empty() -> None:
    from aiokafka.structs import ConsumerRecord

    plain = record(0, "k")
    with_none = [*plain.headers, ("http-header-x-empty", None)]
    for headers, extra in ((list(plain.headers), ()), (with_none, (("http-header-x-empty", b""),))):
        consumed = ConsumerRecord("raw", 0, 7, 0, 0, b"k", b"{}", None, 1, 2, headers)
        source = SourceRecord.from_consumer_record(consumed)
        assert source.headers == (*plain.headers, *extra)
        item = make_item(source)
        assert item.event is not None
        assert item.event.id == "ev-0-0"
        assert dict(item.event.headers) == ({"x-empty": ""} if extra else {})


def test_event_reads_the_headers_exactly_as_the_contract_does() -> None:
    # Event.from_record reads the headers itself (no EventMeta per record): it must
    # agree with EventMeta.from_headers, defaults included.
    from dataclasses import replace

    from webhook_common.contract import EventMeta

    full = EventMeta(
        id="e1",
        source="s",
        type="t",
        time="2026-01-01T00:00:00.000000Z",
        subject="k",
        content_type="text/plain",
        method="PUT",
        query="a=1",
        http_headers={"x-one": "1"},
    ).to_headers()
    required = {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"}
    only_required = [(n, v) for n, v in full if n in required]
    blanks = [(n, v if n in required else b"") for n, v in full]
    for headers in (full, only_required, blanks):
        for key in (b"order-1", None):
            ev = Event.from_record(
                topic="raw", partition=0, offset=0, key=key, value=b"{}", headers=headers
            )
            meta = EventMeta.from_headers(headers)
            if key is not None:  # the record key wins over ce_subject
                meta = replace(meta, subject=key.decode())
            assert ev.meta() == meta


def test_metric_label_values_are_the_ones_dashboards_and_alerts_use() -> None:
    # deploy/grafana and deploy/prometheus select on these values.
    assert [o.value for o in AttemptOutcome] == ["success", "retriable_error", "permanent_error"]
    assert [o.value for o in Outcome] == [
        "delivered",
        "duplicate",
        "dead_lettered",
        "failed",
        "dry_run",
    ]
    assert [(c.text, c.dedup_operation) for c in InfraCall] == [
        ("dedup_check", "check"),
        ("dedup_mark", "mark"),
        ("dlq_produce", None),
    ]


async def test_a_dead_letter_too_large_for_the_topic_is_written_as_a_reference() -> None:
    # The broker refuses the whole record (over the DLQ topic's max.message.bytes): that
    # never changes by trying again, so a small reference to the original is written.
    sink = FakeSink("s", fail=lambda e, n: SinkError("413", retriable=False))
    producer = FakeProducer(max_bytes=1_000)
    d, _, metrics, _ = _deliverer(sink, producer=producer)
    item = make_item(record(7, "k", body=b'"' + b"x" * 5_000 + b'"'))
    assert item.event is not None
    outcome = await asyncio.wait_for(d.deliver(item.event, item.record, "s"), 5)
    assert outcome is Outcome.DEAD_LETTERED
    assert producer.refused == 1
    (sent,) = producer.sent
    assert (sent["topic"], sent["key"]) == ("dlq", b"k")
    assert orjson.loads(sent["value"]) == {
        "reason": "too_large",
        "original_reason": "permanent",
        "topic": "raw",
        "partition": 0,
        "offset": 7,
        "event_id": "ev-0-7",
        "value_bytes": 5_002,
    }
    headers = dict(sent["headers"])
    assert headers["dlq_reason"] == b"too_large"
    assert (headers["dlq_sink"], headers["dlq_original_offset"]) == (b"s", b"7")
    assert b"413" in headers["dlq_error"]
    assert "ce_id" not in headers  # a reference is not an event: nothing replays it as one
    assert metrics.dead_lettered.labels("s", "too_large")._value.get() == 1
    assert metrics.dead_lettered.labels("s", "permanent")._value.get() == 0
    assert d.healthy


async def test_dead_letter_without_a_writer_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FakeSink("s", fail=lambda e, n: SinkError("400 token=hunter2", retriable=False))
    metrics = ConsumerMetrics(fresh_registry())
    d = Deliverer(
        {"s": sink},
        MemoryDedupStore(3600, 100),
        {"s": SinkRetry(RetryConfig(initial_ms=1, max_ms=5))},
        metrics,
        None,  # as in replay
    )
    ev, rec = _ev(3)
    with caplog.at_level(logging.ERROR, logger="consumers.delivery"):
        assert await d.deliver(ev, rec, "s") is Outcome.FAILED  # type: ignore[arg-type]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    text = errors[0]
    for part in ("sink s", ev.id, "raw/0@3", "reason permanent", "no dead-letter topic"):
        assert part in text
    assert "hunter2" not in text  # the sink's error text is not repeated here
    assert metrics.undelivered.labels("s", "permanent")._value.get() == 1


async def test_a_cancelled_error_raised_by_a_sink_is_a_retriable_failure() -> None:
    # Not a cancellation of the delivery: a sink (or its library) let one escape.
    sink = FakeSink("s", fail=lambda e, n: asyncio.CancelledError() if n == 1 else None)
    d, producer, metrics, store = _deliverer(sink)
    ev, rec = _ev()
    assert await d.deliver(ev, rec, "s") is Outcome.DELIVERED  # type: ignore[arg-type]
    assert sink.calls == 2
    assert await store.seen(ev.id, "s")
    assert metrics.deliveries.labels("s", AttemptOutcome.RETRIABLE_ERROR)._value.get() == 1
    assert producer.sent == []


async def test_cancelling_a_delivery_still_cancels_it() -> None:
    sink = FakeSink("s", delay=30)
    d, _, _, _ = _deliverer(sink)
    ev, rec = _ev()
    task = asyncio.create_task(d.deliver(ev, rec, "s"))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.calls == 1  # not taken for a failed attempt and retried


class BatchingSink(FakeSink):
    """A FakeSink with ``send_batch``; ``batch_fail`` decides whether a batch fails."""

    def __init__(
        self,
        name: str = "b",
        *,
        batch_fail: Callable[[Sequence[Event]], BaseException | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.batches: list[list[str]] = []
        self.batch_fail = batch_fail
        self.gate: asyncio.Event | None = None

    async def send_batch(self, events: Sequence[Event]) -> None:
        self.batches.append([e.id for e in events])
        if self.gate is not None:
            await self.gate.wait()
        if self.batch_fail is not None and (exc := self.batch_fail(events)) is not None:
            raise exc
        self.received.extend(events)


def _batching(
    sink: FakeSink, max_batch: int = 500
) -> tuple[Deliverer, FakeProducer, ConsumerMetrics, MemoryDedupStore]:
    store = MemoryDedupStore(3600, 1000)
    producer = FakeProducer()
    metrics = ConsumerMetrics(fresh_registry())
    d = Deliverer(
        {sink.name: sink},
        store,
        {sink.name: SinkRetry(RetryConfig(initial_ms=1, max_ms=5, max_attempts=3))},
        metrics,
        DeadLetterWriter(producer, "dlq", "grp"),
        infra_backoff_max=0.01,
        max_batch=max_batch,
    )
    return d, producer, metrics, store


def _events(n: int) -> list[tuple[Event, SourceRecord]]:
    out = []
    for i in range(n):
        item = make_item(record(i, f"k{i}"))
        assert item.event is not None
        out.append((item.event, item.record))
    return out


async def test_ready_deliveries_to_a_batch_sink_share_one_send_batch_call() -> None:
    sink = BatchingSink()
    d, _, metrics, store = _batching(sink)
    events = _events(30)
    outcomes = await asyncio.gather(*(d.deliver(ev, rec, "b") for ev, rec in events))
    assert outcomes == [Outcome.DELIVERED] * 30
    assert sink.batches == [[ev.id for ev, _ in events]]
    assert sink.calls == 0  # nothing went through send()
    assert all([await store.seen(ev.id, "b") for ev, _ in events])
    assert metrics.deliveries.labels("b", AttemptOutcome.SUCCESS)._value.get() == 30
    assert metrics.batch_size.labels("b")._sum.get() == 30


async def test_batches_are_at_most_max_batch_and_one_delivery_goes_through_send() -> None:
    sink = BatchingSink()
    d, _, _, _ = _batching(sink, max_batch=8)
    events = _events(20)
    await asyncio.gather(*(d.deliver(ev, rec, "b") for ev, rec in events))
    assert [len(b) for b in sink.batches] == [8, 8, 4]
    alone = make_item(record(99, "other"))
    assert alone.event is not None
    assert await d.deliver(alone.event, alone.record, "b") is Outcome.DELIVERED
    assert sink.calls == 1  # a batch of one is a plain send
    assert len(sink.batches) == 3


async def test_no_mark_is_written_before_the_batch_succeeded() -> None:
    sink = BatchingSink()
    sink.gate = asyncio.Event()
    d, _, _, store = _batching(sink)
    events = _events(5)
    tasks = [asyncio.create_task(d.deliver(ev, rec, "b")) for ev, rec in events]
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(sink.batches) == 1
    assert not any([await store.seen(ev.id, "b") for ev, _ in events])
    sink.gate.set()
    assert await asyncio.gather(*tasks) == [Outcome.DELIVERED] * 5
    assert all([await store.seen(ev.id, "b") for ev, _ in events])


async def test_a_failed_batch_falls_back_to_each_events_own_outcome() -> None:
    events = _events(6)
    bad = events[2][0].id

    def batch_fail(batch: Sequence[Event]) -> BaseException | None:
        if any(e.id == bad for e in batch):
            return SinkError(f"row {bad} violates a constraint", retriable=False)
        return None

    def fail(event: Event, _calls: int) -> BaseException | None:
        return SinkError("violates a constraint", retriable=False) if event.id == bad else None

    sink = BatchingSink(batch_fail=batch_fail, fail=fail)
    d, producer, metrics, store = _batching(sink)
    outcomes = await asyncio.gather(*(d.deliver(ev, rec, "b") for ev, rec in events))
    expected = [Outcome.DEAD_LETTERED if ev.id == bad else Outcome.DELIVERED for ev, _ in events]
    assert outcomes == expected
    assert len(sink.batches) == 1  # the failed batch is not tried again as a batch
    assert sink.calls == 6  # each event once on its own, the bad one not retried
    assert sorted(e.id for e in sink.received) == sorted(ev.id for ev, _ in events if ev.id != bad)
    assert [dict(m["headers"])["dlq_reason"] for m in producer.sent] == [b"permanent"]
    assert not await store.seen(bad, "b")
    assert metrics.batch_failures.labels("b")._value.get() == 1
    assert metrics.deliveries.labels("b", AttemptOutcome.PERMANENT_ERROR)._value.get() == 1


async def test_retries_after_a_failed_batch_go_alone() -> None:
    events = _events(4)
    flaky = events[0][0].id
    refusals = {flaky: 2}  # the flaky event's first two calls of send() fail

    def fail(event: Event, _calls: int) -> BaseException | None:
        if refusals.get(event.id, 0) > 0:
            refusals[event.id] -= 1
            return SinkError("503", retriable=True)
        return None

    sink = BatchingSink(batch_fail=lambda _: SinkError("timeout", retriable=True), fail=fail)
    d, producer, metrics, _ = _batching(sink)
    outcomes = await asyncio.gather(*(d.deliver(ev, rec, "b") for ev, rec in events))
    assert outcomes == [Outcome.DELIVERED] * 4
    assert len(sink.batches) == 1
    assert sink.calls == 4 + 2  # one each after the batch, two more for the flaky one
    assert metrics.retries.labels("b")._value.get() == 2
    assert producer.sent == []


async def test_max_batch_one_and_sinks_without_send_batch_send_each_event() -> None:
    sink = BatchingSink()
    d, _, _, _ = _batching(sink, max_batch=1)
    events = _events(10)
    await asyncio.gather(*(d.deliver(ev, rec, "b") for ev, rec in events))
    assert (sink.batches, sink.calls) == ([], 10)
    plain = FakeSink("p")
    d, _, _, _ = _batching(plain)
    await asyncio.gather(*(d.deliver(ev, rec, "p") for ev, rec in events))
    assert plain.calls == 10
