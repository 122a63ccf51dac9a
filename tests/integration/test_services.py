"""The real services the project starts: Kafka, Redis, PostgreSQL answer as used."""

from __future__ import annotations

import uuid

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.integration.conftest import TopicFactory


async def test_kafka_idempotent_produce_and_group_commit(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    topic = await kafka_topic("foundation", partitions=2)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        sent = []
        for i in range(10):
            md = await producer.send_and_wait(
                topic,
                value=f"v{i}".encode(),
                key=f"k{i % 3}".encode(),
                headers=[("ce_id", f"id-{i}".encode())],
            )
            sent.append((md.partition, md.offset))
    finally:
        await producer.stop()
    # Same key, same partition: the ordering promise the gateway builds on.
    assert len({p for (p, _), i in zip(sent, range(10), strict=True) if i % 3 == 0}) == 1

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got: list[tuple[bytes | None, bytes | None]] = []
        while len(got) < 10:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records within 5 s"
            for records in batch.values():
                got.extend((r.key, r.value) for r in records)
        await consumer.commit()
        assignment = consumer.assignment()
        committed = {tp.partition: await consumer.committed(tp) for tp in assignment}
    finally:
        await consumer.stop()
    assert sorted(v for _, v in got if v) == sorted(f"v{i}".encode() for i in range(10))
    per_partition = {p: 0 for p in range(2)}
    for p, _ in sent:
        per_partition[p] += 1
    assert committed == per_partition

    # A new member of the same group starts from the committed offsets: nothing re-read.
    again = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await again.start()
    try:
        batch = await again.getmany(timeout_ms=1500)
        positions = {
            tp.partition: await again.position(TopicPartition(topic, tp.partition))
            for tp in again.assignment()
        }
    finally:
        await again.stop()
    assert sum(len(v) for v in batch.values()) == 0
    assert positions == per_partition


async def test_redis_round_trip(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    key = f"foundation:{uuid.uuid4().hex}"
    try:
        assert await client.set(key, b"value", nx=True, ex=60)
        assert await client.get(key) == b"value"
        assert not await client.set(key, b"other", nx=True, ex=60)
        assert 0 < await client.ttl(key) <= 60
    finally:
        await client.delete(key)
        await client.aclose()


async def test_postgres_insert_select(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    table = f"foundation_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, body jsonb NOT NULL)")
        await conn.execute(f"INSERT INTO {table} VALUES ($1, $2::jsonb)", "e1", '{"a": 1}')
        row = await conn.fetchrow(f"SELECT id, body->>'a' AS a FROM {table}")
        assert row is not None
        assert (row["id"], row["a"]) == ("e1", "1")
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
