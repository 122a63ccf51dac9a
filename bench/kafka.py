"""Kafka chores of the harness: fresh topics per run, deleted afterwards; pre-filling a
topic with contract records for the consumer benchmarks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.payload import order_body, order_id
from webhook_common.contract import EventMeta, format_time


def topic_name(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:10]}"


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


async def prefill(bootstrap: str, topic: str, count: int, keys: int) -> float:
    """Write ``count`` records as the gateway would (seed order body, contract headers,
    unique event ids, ``keys`` distinct order ids in turn). Returns the seconds taken."""
    _, template = order_body(0)
    ids = [order_id(k, topic) for k in range(keys)]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[object]] = []
        for n in range(count):
            key = ids[n % keys]
            body = template.replace(order_id(0).encode(), key.encode())
            meta = EventMeta(
                id=f"{topic}-{n}",
                source="crystallize",
                type="order",
                time=format_time(time.time()),
                subject=key,
                method="POST",
            )
            pending.append(
                await producer.send(topic, body, key=key.encode(), headers=meta.to_headers())
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started
