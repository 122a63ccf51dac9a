"""Counting what arrived: ids in a Kafka topic, rows in a PostgreSQL table, deliveries
at the counting target; and the per-scenario result row."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from faults.traffic import Tally
from webhook_common.contract import H_ID


async def read_topic(
    bootstrap: str, topic: str, expect: int, within: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning: read until at least ``expect``
    records were seen (or ``within`` seconds passed), then until a poll of a second
    brings nothing more, so copies beyond ``expect`` are seen too."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + within
        while len(records) < expect and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
        while more := await consumer.getmany(timeout_ms=1000):
            for part in more.values():
                records.extend(part)
            if time.monotonic() > deadline:  # traffic still arriving: stop somewhere
                break
    finally:
        await consumer.stop()
    return records


async def topic_ids(
    bootstrap: str, topic: str, *, expect: int, within: float = 60.0
) -> Counter[str]:
    """How often each event id occurs in ``topic`` (see :func:`read_topic`)."""
    ids: Counter[str] = Counter()
    for record in await read_topic(bootstrap, topic, expect, within):
        header = dict(record.headers).get(H_ID)
        ids[header.decode() if header else ""] += 1
    return ids


def jsonl_ids(path: Path) -> tuple[Counter[str], int]:
    """How often each event id occurs in a file sink's JSONL file, and how many lines
    are not a JSON object with an ``id`` (a torn write)."""
    ids: Counter[str] = Counter()
    torn = 0
    data = path.read_bytes() if path.exists() else b""
    for line in data.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            torn += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            ids[record["id"]] += 1
        else:
            torn += 1
    return ids, torn


async def table_ids(dsn: str, table: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        # `table` is an identifier the scenario generated, never input.
        rows = await conn.fetch(f"SELECT id FROM {table}")  # noqa: S608
    finally:
        await conn.close()
    return Counter(r["id"] for r in rows)


async def drop_table(dsn: str, table: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


@dataclass(frozen=True)
class SinkCount:
    """What one sink holds or received: copies of each event id, counted as ``counted``
    says (rows per id, lines per id, requests per Idempotency-Key). A sink with
    ``allowed_duplicates`` > 0 is at-least-once by design, up to that bound."""

    name: str
    counts: Counter[str]
    counted: str
    allowed_duplicates: int = 0


@dataclass
class SinkFigures:
    sink: str
    counted: str
    delivered: int
    duplicates: int
    lost: int
    allowed_duplicates: int


@dataclass
class Result:
    """One row of the figures table. ``delivered`` and ``duplicates`` count the acked
    ids only; ids answered 503 that still reached Kafka (the producer delivered after
    the deadline) are reported as ``unacked_in_kafka`` and are not losses."""

    scenario: str
    sent: int
    acked: int
    unavailable: int
    other: int
    in_kafka: int
    kafka_duplicates: int
    delivered: int
    duplicates: int
    lost: int
    unacked_in_kafka: int = 0
    # Acked ids found in the dead-letter topic (None: the scenario did not count them).
    dead_lettered: int | None = None
    sinks: list[SinkFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def reconcile(
    scenario: str,
    tally: Tally,
    kafka: Counter[str],
    delivered: Counter[str] | None,
    repeats: Counter[str] | None = None,
    allowed_duplicates: int = 0,
) -> Result:
    """Compare acked ids with Kafka and (when given) the sink's deliveries.
    ``repeats``: where duplicate deliveries are counted when ``delivered`` cannot show
    them (a PostgreSQL table inserts each id once)."""
    acked = set(tally.acked)
    in_kafka = sum(1 for i in acked if kafka[i] > 0)
    kafka_dupes = sum(kafka[i] - 1 for i in acked if kafka[i] > 1)
    reached = delivered if delivered is not None else kafka
    done = sum(1 for i in acked if reached[i] > 0)
    counted = repeats if repeats is not None else delivered
    dupes = sum(counted[i] - 1 for i in acked if counted[i] > 1) if counted else 0
    result = Result(
        scenario=scenario,
        sent=tally.sent,
        acked=len(tally.acked),
        unavailable=tally.unavailable,
        other=tally.other,
        in_kafka=in_kafka,
        kafka_duplicates=kafka_dupes,
        delivered=done if delivered is not None else 0,
        duplicates=dupes,
        lost=len(acked) - min(in_kafka, done),
        unacked_in_kafka=sum(1 for i in kafka if i not in acked),
    )
    if len(acked) != len(tally.acked):
        result.failures.append("the gateway answered 202 twice with the same id")
    if not tally.acked:
        result.failures.append("no request was acknowledged: the scenario proved nothing")
    if result.lost:
        result.failures.append(f"{result.lost} acknowledged event(s) lost")
    if kafka_dupes:
        result.failures.append(f"{kafka_dupes} acknowledged event(s) written to Kafka twice")
    if dupes > allowed_duplicates:
        result.failures.append(
            f"{dupes} duplicate deliver(y/ies) of acknowledged events "
            f"(at most {allowed_duplicates} expected)"
        )
    return result


def reconcile_sinks(
    scenario: str, tally: Tally, kafka: Counter[str], sinks: Sequence[SinkCount]
) -> Result:
    """:func:`reconcile` with several sinks, each counted on its own (``Result.sinks``).
    The row's delivered, duplicates and lost are those of the exactly-once sinks
    (``allowed_duplicates`` 0): ids held by every one of them, and their duplicates
    added up. Every sink must hold every acked id and stay within its duplicate bound."""
    acked = set(tally.acked)
    figures = [
        SinkFigures(
            sink=s.name,
            counted=s.counted,
            delivered=sum(1 for i in acked if s.counts[i] > 0),
            duplicates=sum(s.counts[i] - 1 for i in acked if s.counts[i] > 1),
            lost=sum(1 for i in acked if s.counts[i] == 0),
            allowed_duplicates=s.allowed_duplicates,
        )
        for s in sinks
    ]
    strict = [s for s in sinks if not s.allowed_duplicates]
    held = Counter({i: 1 for i in acked if all(s.counts[i] > 0 for s in strict)})
    result = reconcile(scenario, tally, kafka, held)
    result.duplicates = sum(f.duplicates for f in figures if not f.allowed_duplicates)
    result.sinks = figures
    for f in figures:
        if f.lost:
            result.failures.append(f"sink {f.sink}: {f.lost} acknowledged event(s) missing")
        if f.duplicates > f.allowed_duplicates:
            result.failures.append(
                f"sink {f.sink}: {f.duplicates} duplicate(s) of acknowledged events "
                f"(at most {f.allowed_duplicates} expected)"
            )
    return result


COLUMNS = (
    ("scenario", 36),
    ("sent", 6),
    ("acked", 6),
    ("503s", 5),
    ("other", 5),
    ("in Kafka", 8),
    ("delivered", 9),
    ("dead-lettered", 13),
    ("dupes", 5),
    ("lost", 4),
    ("verdict", 7),
)


def table(results: Iterable[Result]) -> str:
    """The figures as a Markdown table (readable in a terminal, pasteable into docs)."""
    return _markdown(
        COLUMNS,
        (
            [
                r.scenario,
                r.sent,
                r.acked,
                r.unavailable,
                r.other,
                r.in_kafka,
                r.delivered if r.delivered else "-",
                "-" if r.dead_lettered is None else r.dead_lettered,
                r.duplicates + r.kafka_duplicates,
                r.lost,
                "PASS" if r.ok else "FAIL",
            ]
            for r in results
        ),
    )


SINK_COLUMNS = (
    ("scenario", 36),
    ("sink", 5),
    ("counted as", 30),
    ("delivered", 9),
    ("dupes", 5),
    ("dupes allowed", 13),
    ("lost", 4),
)


def sink_table(results: Iterable[Result]) -> str:
    """Per-sink figures of the scenarios that count each sink on its own ("" if none)."""
    rows = [
        [r.scenario, f.sink, f.counted, f.delivered, f.duplicates, f.allowed_duplicates, f.lost]
        for r in results
        for f in r.sinks
    ]
    return _markdown(SINK_COLUMNS, rows) if rows else ""


def _markdown(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[object]]) -> str:
    head = "| " + " | ".join(name.ljust(w) for name, w in columns) + " |"
    rule = "|" + "|".join("-" * (w + 2) for _, w in columns) + "|"
    lines = [head, rule]
    for cells in rows:
        lines.append(
            "| "
            + " | ".join(str(c).ljust(w) for c, (_, w) in zip(cells, columns, strict=True))
            + " |"
        )
    return "\n".join(lines)
