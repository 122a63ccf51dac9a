"""Batched delivery on the real services: deliveries of different keys that are ready at
the same moment reach the postgres and kafka sinks through ``send_batch``; per-key order
holds, each event lands once, and an event the database refuses is dead-lettered alone
while the others of its batch are delivered."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from faults.reconcile import read_topic
from tests.consumers.harness import (
    ConsumerProcess,
    consumers_running,
    meta,
    produce,
    wait_until,
    write_config,
)
from tests.integration.conftest import TopicFactory
from tests.integration.pg_tables import sink_table

N = 1_200
KEYS = 120
POISON = "poison-7"


@pytest.fixture
async def strict_table(database_url: str) -> AsyncIterator[str]:
    """The sink's table (its ``seq`` counts insertions), created beforehand with a
    constraint that refuses one event id (a permanent error, SQLSTATE class 23)."""

    def refuse(name: str) -> list[str]:
        return [f"ALTER TABLE {name} ADD CONSTRAINT refuse_poison CHECK (id <> '{POISON}')"]

    async with sink_table(database_url, "batches", refuse) as name:
        yield name


async def test_ready_records_go_through_send_batch_in_key_order_and_a_refused_one_alone(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    tmp_path: Path,
    database_url: str,
    strict_table: str,
) -> None:
    raw = await kafka_topic("raw", partitions=3)
    dlq = await kafka_topic("dlq")
    out = await kafka_topic("out", partitions=3)
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {
                "db": {"type": "postgres", "dsn": database_url, "table": strict_table},
                "copy": {"type": "kafka", "topic": out},
            },
            "routes": [{"name": "all", "sinks": ["db", "copy"]}],
        },
    )
    events = [
        (meta(POISON if i == 7 * KEYS + 7 else f"e{i}", f"k{i % KEYS}"), orjson.dumps({"n": i}))
        for i in range(N)
    ]
    await produce(kafka_bootstrap, raw, events)
    ids = [m.id for m, _ in events]
    consumer = ConsumerProcess(config, tmp_path / "consumer.log").start()
    conn = await asyncpg.connect(database_url)
    try:
        with consumers_running(consumer):

            async def all_rows() -> bool:
                count = await conn.fetchval(f"SELECT count(*) FROM {strict_table}")
                return bool(count == N - 1)

            await wait_until(all_rows, 120, f"{N - 1} rows\n{consumer.logs()}")
            dead = await read_topic(kafka_bootstrap, dlq, 1)
            copies = await read_topic(kafka_bootstrap, out, N)
            batches = await consumer.metric("webhookgw_consumer_sink_batch_events_count", sink="db")
            batched = await consumer.metric("webhookgw_consumer_sink_batch_events_sum", sink="db")
            copy_batches = await consumer.metric(
                "webhookgw_consumer_sink_batch_events_count", sink="copy"
            )
            failed = await consumer.metric(
                "webhookgw_consumer_sink_batch_failures_total", sink="db"
            )
            assert consumer.terminate() == 0
        rows = await conn.fetch(
            f"SELECT id, key, kafka_partition, kafka_offset FROM {strict_table} ORDER BY seq"
        )
    finally:
        await conn.close()

    print(
        f"\npostgres: {batched:.0f} events in {batches:.0f} batches, "
        f"{failed:.0f} failed batch(es); kafka sink: {copy_batches:.0f} batches; "
        f"dead letters: {len(dead)}"
    )
    assert sorted(r["id"] for r in rows) == sorted(i for i in ids if i != POISON)
    # Rows in insertion order: each key's rows in offset order.
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r["kafka_offset"])
    assert all(offsets == sorted(offsets) for offsets in by_key.values())
    assert batches > 0
    assert batched / batches > 2, "deliveries did not share send_batch calls"
    assert copy_batches > 0
    assert failed >= 1  # the batch holding the refused event
    assert [dict(d.headers)["dlq_sink"] for d in dead] == [b"db"]
    assert dict(dead[0].headers)["dlq_reason"] == b"permanent"
    assert orjson.loads(dead[0].value) == {"n": 7 * KEYS + 7}
    # The kafka sink took every event, the refused one too, each once and in key order.
    copied: dict[bytes, list[int]] = defaultdict(list)
    for c in copies:
        copied[c.key].append(orjson.loads(c.value)["n"])
    assert sum(len(v) for v in copied.values()) == N
    assert all(ns == sorted(ns) for ns in copied.values())
