"""The redis dedup store on a real Redis: semantics, TTL, batching, outage."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from consumers.dedup import DedupUnavailable, RedisDedupStore


@pytest.fixture
async def store(redis_url: str) -> RedisDedupStore:
    return RedisDedupStore.from_url(redis_url, 120, f"test:{uuid.uuid4().hex[:8]}:", 200)


async def test_marks_per_event_and_sink_with_ttl(store: RedisDedupStore, redis_url: str) -> None:
    try:
        assert not await store.seen("e1", "a")
        await store.mark("e1", "a")
        assert await store.seen("e1", "a")
        assert not await store.seen("e1", "b")
        client = aioredis.from_url(redis_url)
        try:
            assert 0 < await client.ttl(store.key("e1", "a")) <= 120
        finally:
            await client.aclose()
    finally:
        await store.aclose()


async def test_each_mark_keeps_its_own_window(store: RedisDedupStore, redis_url: str) -> None:
    try:
        await asyncio.gather(store.mark("long", "a"), store.mark("short", "a", 7))
        client = aioredis.from_url(redis_url)
        try:
            assert 100 < await client.ttl(store.key("long", "a")) <= 120
            assert 0 < await client.ttl(store.key("short", "a")) <= 7
        finally:
            await client.aclose()
    finally:
        await store.aclose()


async def test_concurrent_checks_and_marks_share_round_trips(store: RedisDedupStore) -> None:
    try:
        ids = [f"e{i}" for i in range(1000)]
        await asyncio.gather(*(store.mark(i, "s") for i in ids[:500]))
        marks_trips = store.round_trips
        seen = await asyncio.gather(*(store.seen(i, "s") for i in ids))
        check_trips = store.round_trips - marks_trips
        assert seen == [True] * 500 + [False] * 500
        print(f"\n1000 checks in {check_trips} round trips, 500 marks in {marks_trips}")
        assert marks_trips <= 3  # 500 marks / batches of 200
        assert check_trips <= 5
    finally:
        await store.aclose()


async def test_unreachable_redis_raises_retriable_error() -> None:
    store = RedisDedupStore.from_url("redis://127.0.0.1:1/0", 60, "x:", 10)
    try:
        with pytest.raises(DedupUnavailable) as info:
            await store.seen("e", "s")
        assert info.value.retriable
        with pytest.raises(DedupUnavailable):
            await store.mark("e", "s")
    finally:
        await store.aclose()
