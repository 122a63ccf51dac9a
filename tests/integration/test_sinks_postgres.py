"""The PostgreSQL sink on the real server: contract, row contents, conflicts, errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from consumers.plugins import build_sinks
from consumers.sinks import BatchSink, SinkContext, SinkError
from consumers.testing import SinkContract, make_event
from tests.consumers.sinks.http_target import free_port
from webhook_common.contract import parse_time
from webhook_common.errors import ConfigError


@pytest.fixture
async def table(database_url: str) -> AsyncIterator[str]:
    name = f"sink_test_{uuid.uuid4().hex[:10]}"
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        await conn.close()


async def rows(database_url: str, table: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(f"SELECT * FROM {table} ORDER BY seq"))
    finally:
        await conn.close()


@asynccontextmanager
async def pg_sink(database_url: str, table: str, **options: Any) -> AsyncIterator[BatchSink]:
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    section = {"type": "postgres", "dsn": database_url, "table": table, **options}
    sink = build_sinks({"db": section}, context)["db"]
    assert isinstance(sink, BatchSink)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.aclose()


class TestPostgresSinkContract(SinkContract):
    sink_type = "postgres"
    broken_retriable = True

    @pytest.fixture(autouse=True)
    def _target(self, database_url: str, table: str) -> None:
        self.database_url = database_url
        self.table = table

    def sink_config(self) -> dict[str, Any]:
        return {"dsn": self.database_url, "table": self.table}

    async def delivered(self, expected: int) -> list[str]:
        return [row["id"] for row in await rows(self.database_url, self.table)]

    def broken_config(self) -> dict[str, Any] | None:
        return {"dsn": f"postgresql://webhooks:pw@127.0.0.1:{free_port()}/webhooks"}


async def test_row_contents(database_url: str, table: str) -> None:
    json_event = make_event("order-1", 1, headers={"x-a": "1"})
    text_event = make_event("order-2", 2, body=b"a=1&b=\xff", content_type="text/plain")
    async with pg_sink(database_url, table) as sink:
        await sink.send(json_event)
        await sink.send(text_event)
    first, second = await rows(database_url, table)
    assert first["id"] == json_event.id
    assert (first["source"], first["type"], first["key"]) == (
        "contract",
        "thing.happened",
        "order-1",
    )
    assert first["time"] == parse_time(json_event.time)
    assert json.loads(first["headers"]) == {"x-a": "1"}
    assert json.loads(first["body"]) == {"key": "order-1", "n": 1, "text": "héllo"}
    assert first["body_is_json"] is True
    assert (first["kafka_topic"], first["kafka_partition"], first["kafka_offset"]) == (
        "webhooks.raw",
        0,
        json_event.offset,
    )
    assert first["received_at"] is not None
    # Not JSON: kept as a JSON string of the text, flagged.
    assert json.loads(second["body"]) == "a=1&b=\ufffd"
    assert second["body_is_json"] is False
    assert second["content_type"] == "text/plain"


async def test_redelivery_inserts_nothing(database_url: str, table: str) -> None:
    a, b, c = make_event("k1"), make_event("k2"), make_event("k3")
    async with pg_sink(database_url, table) as sink:
        await sink.send(a)
        await sink.send(a)
        await sink.send_batch([a, b, b, c])  # duplicates inside one batch, too
        await sink.send_batch([c])
    assert [row["id"] for row in await rows(database_url, table)] == [a.id, b.id, c.id]


async def test_batch_of_many(database_url: str, table: str) -> None:
    events = [make_event(f"k{n % 17}", n) for n in range(2000)]
    async with pg_sink(database_url, table) as sink:
        await sink.send_batch(events)
    assert [row["id"] for row in await rows(database_url, table)] == [e.id for e in events]


async def test_nul_in_json_is_not_retriable(database_url: str, table: str) -> None:
    event = make_event(body=b'{"a": "x\\u0000y"}')
    async with pg_sink(database_url, table) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(event)
        await sink.send(make_event())  # the sink still works afterwards
    assert info.value.retriable is False
    assert event.id in str(info.value)
    assert "'db'" in str(info.value)


async def test_unparseable_time_is_not_retriable(database_url: str, table: str) -> None:
    async with pg_sink(database_url, table) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event(time="yesterday"))
    assert info.value.retriable is False
    assert "'db'" in str(info.value)
    assert "yesterday" in str(info.value)


async def test_concurrent_starts_create_the_table_once(database_url: str, table: str) -> None:
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    section = {"type": "postgres", "dsn": database_url, "table": table}
    sinks = [build_sinks({f"db{i}": section}, context)[f"db{i}"] for i in range(4)]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.start() for s in sinks)), 30)
        await asyncio.gather(*(s.send(make_event(f"k{i}")) for i, s in enumerate(sinks)))
    finally:
        for sink in sinks:
            await sink.aclose()
    assert len(await rows(database_url, table)) == 4


async def test_missing_table_without_create_is_an_error(database_url: str, table: str) -> None:
    async with pg_sink(database_url, table, create_table=False) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event())
    assert "UndefinedTableError" in str(info.value)


async def test_unreachable_server_hides_the_dsn() -> None:
    dsn = f"postgresql://webhooks:pa55w0rd-x@127.0.0.1:{free_port()}/webhooks"
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    sink = build_sinks({"db": {"type": "postgres", "dsn": dsn}}, context)["db"]
    with pytest.raises(SinkError) as info:
        await sink.start()
    await sink.aclose()
    assert info.value.retriable is True
    assert "pa55w0rd-x" not in str(info.value)
    assert "pa55w0rd-x" not in repr(sink.config)  # type: ignore[attr-defined]


def test_table_name_must_be_an_identifier() -> None:
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    for bad in ("events; drop table x", "Events", "a.b.c", '"quoted"', "1abc"):
        with pytest.raises(ConfigError) as info:
            build_sinks(
                {"db": {"type": "postgres", "dsn": "postgresql://x", "table": bad}}, context
            )
        assert "consumers.sinks.db.table" in str(info.value)
