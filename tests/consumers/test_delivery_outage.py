"""A sink outage is not a poison event: events wait behind the sink's open circuit and
are delivered when it returns; only what fails on its own is dead-lettered."""

from __future__ import annotations

import asyncio

from consumers.circuit import CircuitState
from consumers.config import RetryConfig
from consumers.dedup import MemoryDedupStore
from consumers.delivery import Deliverer, Outcome
from consumers.dlq import DeadLetterWriter
from consumers.event import Event
from consumers.metrics import ConsumerMetrics
from consumers.record import SourceRecord, make_item
from consumers.retry import SinkRetry
from consumers.sinks import SinkError
from tests.consumers.fakes import FakeProducer, FakeSink, fresh_registry, record

# A policy that would give up within ~20 ms; the outages below last ten times longer.
FAST = RetryConfig(
    initial_ms=1,
    max_ms=4,
    max_attempts=4,
    circuit_failures=3,
    circuit_open_ms=5,
    circuit_max_open_ms=20,
)


class Outage:
    """A sink failing for every event (a 503) until :meth:`end`."""

    def __init__(self) -> None:
        self.down = True
        self.calls_while_down = 0

    def __call__(self, event: Event, n: int) -> BaseException | None:
        if self.down:
            self.calls_while_down += 1
            return SinkError("503 Service Unavailable", retriable=True)
        return None

    def end(self) -> None:
        self.down = False


def build(sink: FakeSink, *, hold: bool = True) -> tuple[Deliverer, FakeProducer, ConsumerMetrics]:
    producer = FakeProducer()
    metrics = ConsumerMetrics(fresh_registry())
    d = Deliverer(
        {sink.name: sink},
        MemoryDedupStore(3600, 1000),
        {sink.name: SinkRetry(FAST)},
        metrics,
        DeadLetterWriter(producer, "dlq", "grp"),
        hold_on_outage=hold,
    )
    return d, producer, metrics


def item(offset: int, key: str = "k") -> tuple[Event, SourceRecord]:
    it = make_item(record(offset, key))
    assert it.event is not None
    return it.event, it.record


async def test_one_event_outlasting_its_attempts_waits_for_the_sink_instead_of_the_dlq() -> None:
    outage = Outage()
    sink = FakeSink("s", fail=outage)
    d, producer, metrics = build(sink)
    ev, rec = item(0)
    task = asyncio.create_task(d.deliver(ev, rec, "s"))
    await asyncio.sleep(0.2)  # ten times what the retry policy would allow
    assert not task.done(), "the outage turned the event into a dead letter"
    assert d.retries["s"].circuit.state is not CircuitState.CLOSED
    outage.end()
    assert await asyncio.wait_for(task, 2) is Outcome.DELIVERED
    assert producer.sent == []
    assert metrics.held.labels("s")._value.get() >= 1


async def test_many_events_through_an_outage_all_delivered_none_dead_lettered() -> None:
    outage = Outage()
    sink = FakeSink("s", fail=outage)
    d, producer, _ = build(sink)
    events = [item(n, key=f"k{n}") for n in range(30)]
    tasks = [asyncio.create_task(d.deliver(ev, rec, "s")) for ev, rec in events]
    await asyncio.sleep(0.3)
    calls = outage.calls_while_down
    await asyncio.sleep(0.3)
    # Open circuit: probes only, not 30 events retrying on their own backoff.
    assert outage.calls_while_down - calls < 30
    outage.end()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert results == [Outcome.DELIVERED] * 30
    assert producer.sent == []
    assert d.retries["s"].circuit.state is CircuitState.CLOSED


async def test_an_event_failing_while_the_sink_delivers_others_is_dead_lettered() -> None:
    poison = FakeSink(
        "s", fail=lambda e, n: SinkError("500", retriable=True) if e.offset == 0 else None
    )
    d, producer, _ = build(poison)
    bad, bad_rec = item(0, key="bad")
    failing = asyncio.create_task(d.deliver(bad, bad_rec, "s"))

    async def others() -> None:
        for n in range(1, 40):
            ev, rec = item(n, key=f"ok{n}")
            assert await d.deliver(ev, rec, "s") is Outcome.DELIVERED
            await asyncio.sleep(0.002)

    await others()
    assert await asyncio.wait_for(failing, 2) is Outcome.DEAD_LETTERED
    assert len(producer.sent) == 1
    assert dict(producer.sent[0]["headers"])["dlq_reason"] == b"exhausted"


async def test_a_permanent_refusal_is_dead_lettered_at_once_and_keeps_the_circuit_closed() -> None:
    sink = FakeSink("s", fail=lambda e, n: SinkError("422", retriable=False))
    d, _, _ = build(sink)
    ev, rec = item(0)
    assert await d.deliver(ev, rec, "s") is Outcome.DEAD_LETTERED
    assert sink.calls == 1
    assert d.retries["s"].circuit.state is CircuitState.CLOSED


async def test_without_holding_an_outage_ends_the_attempts_as_before() -> None:
    """What replay uses: it reports what it could not deliver instead of waiting."""
    sink = FakeSink("s", fail=Outage())
    d, _, _ = build(sink, hold=False)
    ev, rec = item(0)
    assert await asyncio.wait_for(d.deliver(ev, rec, "s"), 5) is Outcome.DEAD_LETTERED
    assert sink.calls == FAST.max_attempts
