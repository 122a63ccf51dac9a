"""Replay against a fake Kafka consumer: planning, which sink gets what, per-key order,
the read-ahead window, dry runs, dedup and the report."""

from __future__ import annotations

import asyncio
import io
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consumers.config import ConsumerConfig
from consumers.dedup import MemoryDedupStore
from consumers.delivery import Outcome
from consumers.dlq import REASON_CONTRACT, REASON_UNROUTED
from consumers.event import Event
from consumers.metrics import ConsumerMetrics
from consumers.record import SourceRecord
from consumers.replay import Range, Replayer, ReplayError, ReplayReport
from consumers.sinks import SinkError
from tests.consumers.fakes import (
    FakeConsumer,
    FakeSink,
    consumer_record,
    dead_letter,
    deliverer,
    fresh_registry,
    record,
)

Records = list[ConsumerRecord[bytes, bytes]]


class _Replay:
    """A replayer over ``records`` delivering to ``sinks``, and what it worked with."""

    def __init__(
        self,
        records: Iterable[ConsumerRecord[bytes, bytes]],
        sinks: Iterable[FakeSink],
        names: Iterable[str],
        *,
        routes: list[dict[str, Any]] | None = None,
        max_parallel: int = 10,
        max_in_flight: int = 100,
        dedup: MemoryDedupStore | None = None,
        ends: dict[TopicPartition, int] | None = None,
        consumer: FakeConsumer | None = None,
        kafka: dict[str, Any] | None = None,
        **options: bool,
    ) -> None:
        sinks = list(sinks)
        self.settings = ConsumerConfig.model_validate(
            {
                "kafka": kafka or {},
                "consumers": {
                    "topics": ["raw"],
                    "dlq_topic": "dlq",
                    "sinks": {s.name: {"type": "fake"} for s in sinks},
                    "routes": routes or [{"name": "all", "sinks": [s.name for s in sinks]}],
                    "concurrency": {
                        "max_parallel": max_parallel,
                        "max_in_flight": max_in_flight,
                    },
                },
            }
        )
        self.metrics = ConsumerMetrics(fresh_registry())
        self.dedup = dedup or MemoryDedupStore(3600, 10_000)
        self.consumer = consumer or FakeConsumer(records, ends=ends)
        self.progress = io.StringIO()
        self.replayer = Replayer(
            self.settings,
            deliverer(sinks, self.metrics, dedup=self.dedup),
            self.metrics,
            list(names),
            progress_stream=self.progress,
            consumer_factory=lambda: self.consumer,
            **options,
        )

    def replayed(self, sink: str, outcome: Outcome) -> float:
        value: float = self.metrics.replayed.labels(sink, outcome)._value.get()
        return value


def _raw(*specs: tuple[int, str], partition: int = 0) -> Records:
    """Raw records: (offset, key) each, timestamped ``offset`` seconds after the epoch."""
    return [
        consumer_record(record(offset, key, partition=partition), timestamp_ms=offset * 1000)
        for offset, key in specs
    ]


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def test_plans_whole_partitions_time_windows_and_named_offsets() -> None:
    records = _raw(*((n, "k") for n in range(5))) + _raw((0, "k"), (1, "k"), (9, "k"), partition=1)
    replay = _Replay(records, [FakeSink("a")], ["a"])
    consumer, replayer = replay.consumer, replay.replayer

    assert await replayer.plan_all(consumer, "raw") == [
        Range("raw", 0, 0, 5),
        Range("raw", 1, 0, 10),
    ]
    # From the first record at or after --since to the last one at or before --until.
    assert await replayer.plan_times(consumer, ["raw"], _ms(2000), _ms(3000)) == [
        Range("raw", 0, 2, 4),
        Range("raw", 1, 9, 9),
    ]
    assert await replayer.plan_times(consumer, ["raw"], None, _ms(1500)) == [
        Range("raw", 0, 0, 2),
        Range("raw", 1, 0, 9),
    ]
    assert await replayer.plan_times(consumer, ["raw"], _ms(8000), None) == [
        Range("raw", 0, 5, 5),  # nothing that late: an empty range at the end
        Range("raw", 1, 9, 10),
    ]
    await replayer.check_ranges(consumer, [Range("raw", 1, 0, 1)])
    with pytest.raises(ReplayError, match="has no partition 7 \\(it has 2\\)"):
        await replayer.run_ranges([Range("raw", 7, 0, 1)])
    assert consumer.stopped


async def test_time_window_replay_delivers_only_what_is_inside() -> None:
    sink = FakeSink("a")
    replay = _Replay(_raw(*((n, f"k{n}") for n in range(6))), [sink], ["a"])
    report = await replay.replayer.run_times(["raw"], _ms(1000), _ms(3000))
    assert sorted(e.offset for e in sink.received) == [1, 2, 3]
    assert (report.records, report.skipped) == (3, 0)


async def test_dlq_replay_delivers_each_dead_letter_to_its_sink_among_those_named() -> None:
    a, b, c = FakeSink("a"), FakeSink("b"), FakeSink("c")
    letters = [
        dead_letter(record(40, "k0"), 0, sink="a"),
        dead_letter(record(41, "k1"), 1, sink="b"),
        dead_letter(record(42, "k2"), 2, sink="c"),  # c is not named: skipped
        dead_letter(record(43, "k3"), 3, sink="", reason=REASON_UNROUTED),  # every named sink
        dead_letter(record(44, "k4"), 4, sink="a", reason=REASON_CONTRACT),  # not replayable
        consumer_record(record(5, "k5", topic="dlq")),  # no dlq headers: not a dead letter
    ]
    replay = _Replay(letters, [a, b, c], ["a", "b"])
    report = await replay.replayer.run_dlq()

    assert [(e.id, e.topic, e.offset) for e in a.received] == [
        ("ev-0-40", "raw", 40),  # the original record, not its copy in the DLQ
        ("ev-0-43", "raw", 43),
    ]
    assert [e.id for e in b.received] == ["ev-0-41", "ev-0-43"]
    assert c.calls == 0
    assert (report.records, report.skipped, report.failed) == (6, 3, 0)
    assert report.outcomes == {Outcome.DELIVERED: 4}
    assert replay.replayed("a", Outcome.DELIVERED) == 2
    assert replay.replayed("b", Outcome.DELIVERED) == 2
    progress = replay.progress.getvalue()
    for count in (
        "delivered=4",
        "skipped_not_for_sinks=1",
        "skipped_contract=1",
        "skipped_not_dead_letter=1",
    ):
        assert count in progress
    assert replay.consumer.stopped


async def test_raw_replay_follows_routes_unless_told_to_ignore_them() -> None:
    records = [
        consumer_record(record(0, "k", type_="order.created")),
        consumer_record(record(1, "k", type_="invoice.paid")),
    ]
    routes: list[dict[str, Any]] = [
        {"name": "orders", "match": {"type": "order.*"}, "sinks": ["a"]},
        {"name": "rest", "sinks": ["b"]},
    ]
    for ignore_routes, got in ((False, [0]), (True, [0, 1])):
        a, b = FakeSink("a"), FakeSink("b")
        replay = _Replay(records, [a, b], ["a"], routes=routes, ignore_routes=ignore_routes)
        report = await replay.replayer.run_ranges([Range("raw", 0, 0, 2)])
        assert [e.offset for e in a.received] == got
        assert b.calls == 0  # not named
        assert report.skipped == 2 - len(got)


async def test_dead_letters_of_one_key_are_replayed_in_order_and_keys_in_parallel() -> None:
    # Keys finish out of offset order in `run`, so the DLQ holds the original offsets
    # out of order (and offset 7 twice: it failed in two sinks).
    rng = random.Random(3)
    per_key: dict[str, list[int]] = defaultdict(list)
    for offset in range(60):
        per_key[f"k{offset % 6}"].append(offset)
    queues = {key: list(offsets) for key, offsets in per_key.items()}
    written: list[tuple[int, str]] = []
    while queues:
        key = rng.choice(sorted(queues))
        written.append((queues[key].pop(0), "s"))
        if written[-1][0] == 7:
            written.append((7, "other"))
        if not queues[key]:
            del queues[key]
    letters = [
        dead_letter(record(offset, f"k{offset % 6}"), n, sink=sink)
        for n, (offset, sink) in enumerate(written)
    ]
    assert [o for o, _ in written] != sorted(o for o, _ in written)
    sink = FakeSink("s", delay=0.005)
    replay = _Replay(letters, [sink, FakeSink("other")], ["s"], max_parallel=4)
    report = await replay.replayer.run_dlq()

    got: dict[str, list[int]] = defaultdict(list)
    for ev in sink.received:
        got[ev.key].append(ev.offset)
    assert got == per_key
    assert sink.overlapping_same_key == 0
    assert 1 < sink.max_active <= 4
    assert (report.records, report.skipped) == (61, 1)  # offset 7's letter for "other"


async def test_records_are_read_ahead_at_most_max_in_flight() -> None:
    gate = asyncio.Event()

    class GatedSink(FakeSink):
        async def send(self, event: Any) -> None:
            await gate.wait()
            await super().send(event)

    sink = GatedSink("s")
    replay = _Replay(_raw(*((n, f"k{n}") for n in range(20))), [sink], ["s"], max_in_flight=5)
    task = asyncio.create_task(replay.replayer.run_ranges([Range("raw", 0, 0, 20)]))
    try:
        await asyncio.sleep(0.1)
        assert replay.replayer.report.records == 5
        gate.set()
        report = await asyncio.wait_for(task, 5)
    finally:
        gate.set()
        await asyncio.wait_for(task, 5)
    assert sorted(e.offset for e in sink.received) == list(range(20))
    assert report.outcomes == {Outcome.DELIVERED: 20}


async def test_dry_run_delivers_nothing_and_marks_nothing() -> None:
    sink = FakeSink("s")
    letters = [dead_letter(record(n, "k"), n) for n in range(3)]
    replay = _Replay(letters, [sink], ["s"], dry_run=True)
    report = await replay.replayer.run_dlq()
    assert sink.calls == 0
    assert report.outcomes == {Outcome.DRY_RUN: 3}
    assert not await replay.dedup.seen("ev-0-0", "s")
    assert replay.replayed("s", Outcome.DRY_RUN) == 3


async def test_dedup_skips_what_a_sink_already_has() -> None:
    sink = FakeSink("s")
    dedup = MemoryDedupStore(3600, 100)
    await dedup.mark("ev-0-1", "s")  # delivered before the replay
    records = _raw((0, "k"), (1, "k"), (2, "k"))
    first = await _Replay(records, [sink], ["s"], dedup=dedup).replayer.run_ranges(
        [Range("raw", 0, 0, 3)]
    )
    assert [e.offset for e in sink.received] == [0, 2]
    assert first.outcomes == {Outcome.DELIVERED: 2, Outcome.DUPLICATE: 1}
    again = _Replay(records, [sink], ["s"], dedup=dedup)
    second = await again.replayer.run_ranges([Range("raw", 0, 0, 3)])
    assert second.outcomes == {Outcome.DUPLICATE: 3}  # replaying twice delivers once
    assert len(sink.received) == 2
    assert again.replayed("s", Outcome.DUPLICATE) == 3


async def test_report_counts_failures_per_sink() -> None:
    def refuse_k1(event: Any, calls: int) -> BaseException | None:
        return SinkError("400", retriable=False) if event.key == "k1" else None

    a, b = FakeSink("a", fail=refuse_k1), FakeSink("b")
    replay = _Replay(_raw((0, "k0"), (1, "k1"), (2, "k2")), [a, b], ["a", "b"])
    report = await replay.replayer.run_ranges([Range("raw", 0, 0, 3)])
    # Replay has no DLQ writer: what a sink refuses is reported as failed.
    assert report.outcomes == {Outcome.DELIVERED: 5, Outcome.FAILED: 1}
    assert (report.records, report.skipped, report.failed) == (3, 0, 1)
    assert replay.replayed("a", Outcome.FAILED) == 1
    assert replay.replayed("a", Outcome.DELIVERED) == 2
    assert replay.replayed("b", Outcome.DELIVERED) == 3
    last = replay.progress.getvalue().strip().splitlines()[-1]
    assert "3/3 100%" in last
    assert "delivered=5 failed=1" in last


async def test_a_partition_in_two_ranges_and_a_range_past_the_last_record() -> None:
    # The second range starts below where the first ended (the scheduler takes a
    # partition's offsets in increasing order only), and overlaps it. The partition
    # ends at 12, past its last record (transaction markers): the read stops there.
    sink = FakeSink("s")
    replay = _Replay(
        _raw(*((n, f"k{n % 2}") for n in range(8))),
        [sink],
        ["s"],
        ends={TopicPartition("raw", 0): 12},
    )
    report = await asyncio.wait_for(
        replay.replayer.run_ranges([Range("raw", 0, 4, 12), Range("raw", 0, 0, 6)]), 10
    )
    offsets = [e.offset for e in sink.received]
    assert (sorted(offsets[:4]), sorted(offsets[4:])) == ([4, 5, 6, 7], [0, 1, 2, 3])
    assert report.outcomes == {Outcome.DELIVERED: 8, Outcome.DUPLICATE: 2}
    assert report.records == 10


async def test_offsets_outside_the_partition_are_an_error_before_anything_is_delivered() -> None:
    # The partition holds offsets 10-14 (older ones deleted by retention): a range
    # reaching below 10 or past 14 cannot be read as asked. An end past the high
    # watermark used to be polled for forever.
    records = _raw(*((n, "k") for n in range(10, 15)))
    for bad, message in (
        (Range("raw", 0, 12, 20), r"--offsets 0:12-19: raw/0 holds offsets 10-14"),
        (Range("raw", 0, 3, 12), r"--offsets 0:3-11: raw/0 holds offsets 10-14"),
    ):
        sink = FakeSink("s")
        replay = _Replay(records, [sink], ["s"])
        with pytest.raises(ReplayError, match=message):
            await asyncio.wait_for(replay.replayer.run_ranges([Range("raw", 0, 10, 11), bad]), 5)
        assert sink.calls == 0
        assert replay.consumer.stopped
    empty = _Replay([], [FakeSink("s")], ["s"], ends={TopicPartition("raw", 0): 7})
    empty.consumer.partitions_for_topic = lambda topic: {0}  # type: ignore[method-assign]
    with pytest.raises(ReplayError, match=r"raw/0 holds no records \(log start and end 7\)"):
        await asyncio.wait_for(empty.replayer.run_ranges([Range("raw", 0, 7, 8)]), 5)


class _StuckConsumer(FakeConsumer):
    """Offset look-ups that never answer, as aiokafka's may for a partition it cannot
    find the leader of."""

    def __init__(self, records: Records, stuck: str) -> None:
        super().__init__(records)
        self.stuck = stuck

    async def _hang(self) -> None:
        await asyncio.Event().wait()

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        if self.stuck == "beginning_offsets":
            await self._hang()
        return await super().beginning_offsets(tps)

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        if self.stuck == "end_offsets":
            await self._hang()
        return await super().end_offsets(tps)

    async def offsets_for_times(self, timestamps: Any) -> Any:
        if self.stuck == "offsets_for_times":
            await self._hang()
        return await super().offsets_for_times(timestamps)


@pytest.mark.parametrize(
    ("stuck", "run"),
    [
        ("beginning_offsets", "dlq"),
        ("end_offsets", "ranges"),
        ("offsets_for_times", "times"),
    ],
)
async def test_offset_look_ups_are_bounded_and_name_the_partitions(stuck: str, run: str) -> None:
    records = _raw((0, "k"), (1, "k"))
    if run == "dlq":
        records = [dead_letter(record(n, "k"), n) for n in range(2)]
    consumer = _StuckConsumer(records, stuck)
    replay = _Replay(
        [], [FakeSink("s")], ["s"], consumer=consumer, kafka={"request_timeout_ms": 1000}
    )
    runs: dict[str, Callable[[], Awaitable[ReplayReport]]] = {
        "dlq": replay.replayer.run_dlq,
        "ranges": lambda: replay.replayer.run_ranges([Range("raw", 0, 0, 2)]),
        "times": lambda: replay.replayer.run_times(["raw"], _ms(0), None),
    }
    topic = "dlq" if run == "dlq" else "raw"
    with pytest.raises(ReplayError, match=f"{stuck}.* {topic}/0 .*within 1 s"):
        await asyncio.wait_for(runs[run](), 5)
    assert consumer.stopped


async def test_a_processing_error_fails_that_record_and_the_replay_finishes() -> None:
    sink = FakeSink("s")
    replay = _Replay(_raw((0, "k0"), (1, "k1"), (2, "k1"), (3, "k2")), [sink], ["s"])
    deliver = replay.replayer.deliverer.deliver

    async def broken(
        event: Event, record: SourceRecord, sink_name: str, *, dry_run: bool = False
    ) -> Outcome:
        if event.offset == 1:
            raise RuntimeError("a bug of ours")
        return await deliver(event, record, sink_name, dry_run=dry_run)

    replay.replayer.deliverer.deliver = broken  # type: ignore[method-assign]
    report = await asyncio.wait_for(replay.replayer.run_ranges([Range("raw", 0, 0, 4)]), 5)
    assert sorted(e.offset for e in sink.received) == [0, 2, 3]
    assert report.outcomes == {Outcome.DELIVERED: 3, Outcome.FAILED: 1}
    assert report.failed == 1
    assert replay.replayed("s", Outcome.FAILED) == 1


async def test_a_too_large_reference_is_skipped_and_names_the_original() -> None:
    sink = FakeSink("s")
    original = record(42, "k")
    reference = dead_letter(original, 0, reason="too_large")
    replay = _Replay([reference], [sink], ["s"])
    report = await replay.replayer.run_dlq()
    assert sink.calls == 0
    assert (report.records, report.skipped, report.failed) == (1, 1, 0)
    assert "skipped_too_large=1" in replay.progress.getvalue()
