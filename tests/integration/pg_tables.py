"""The postgres sink's own table, created by a test before the sink starts, with
whatever the test adds to it (a trigger, a constraint)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
from prometheus_client import CollectorRegistry

from consumers.sinks import SinkContext
from consumers.sinks.postgres import PostgresSink, PostgresSinkConfig


@asynccontextmanager
async def sink_table(
    database_url: str,
    prefix: str,
    extra: Callable[[str], list[str]] = lambda _: [],
    cleanup: Callable[[str], list[str]] = lambda _: [],
) -> AsyncIterator[str]:
    """A fresh table named ``{prefix}_<random>`` in the sink's own schema, then the
    statements ``extra(name)``; dropped afterwards, after ``cleanup(name)``."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    config = PostgresSinkConfig.model_validate({"dsn": database_url, "table": name})
    ddl = PostgresSink("db", config, SinkContext("", {}, CollectorRegistry())).create_table_sql()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(ddl)
        for statement in extra(name):
            await conn.execute(statement)
        yield name
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        for statement in cleanup(name):
            await conn.execute(statement)
        await conn.close()
