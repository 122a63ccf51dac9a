"""Counting what arrived: ids in a Kafka topic, rows in a PostgreSQL table, deliveries
at the counting target; and the per-scenario result row."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer

from faults.traffic import Tally
from webhook_common.contract import H_ID


async def topic_ids(
    bootstrap: str, topic: str, *, expect: int, within: float = 60.0
) -> Counter[str]:
    """How often each event id occurs in ``topic`` (read from the beginning until at
    least ``expect`` records were seen, then a quiet second to catch extras)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    ids: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + within
        quiet = 0
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            got = sum(len(records) for records in batch.values())
            for records in batch.values():
                for record in records:
                    header = dict(record.headers).get(H_ID)
                    ids[header.decode() if header else ""] += 1
            quiet = quiet + 1 if not got else 0
            if sum(ids.values()) >= expect and quiet >= 2:
                break
    finally:
        await consumer.stop()
    return ids


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


COLUMNS = (
    ("scenario", 36),
    ("sent", 6),
    ("acked", 6),
    ("503s", 5),
    ("other", 5),
    ("in Kafka", 8),
    ("delivered", 9),
    ("dupes", 5),
    ("lost", 4),
    ("verdict", 7),
)


def table(results: Iterable[Result]) -> str:
    """The figures as a Markdown table (readable in a terminal, pasteable into docs)."""
    head = "| " + " | ".join(name.ljust(w) for name, w in COLUMNS) + " |"
    rule = "|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|"
    lines = [head, rule]
    for r in results:
        cells = [
            r.scenario,
            r.sent,
            r.acked,
            r.unavailable,
            r.other,
            r.in_kafka,
            r.delivered if r.delivered else "-",
            r.duplicates + r.kafka_duplicates,
            r.lost,
            "PASS" if r.ok else "FAIL",
        ]
        lines.append(
            "| "
            + " | ".join(str(c).ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True))
            + " |"
        )
    return "\n".join(lines)
