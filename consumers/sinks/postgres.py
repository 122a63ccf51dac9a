"""The ``postgres`` sink: one row per event, inserted once.

The table (``table``, optionally ``schema.table``) is created if missing::

    seq              bigint identity    insertion order (handy for "what came in last")
    id               text primary key   the event id: a redelivery inserts nothing
    source, type, key text
    time             timestamptz        when the gateway received it (ce_time)
    content_type     text
    headers          jsonb              the forwarded provider headers
    body             jsonb              the body when it is JSON; otherwise the body as
                                        text, stored as a JSON string (invalid UTF-8
                                        replaced), so every row has one queryable column
    body_is_json     boolean            tells those two cases apart
    kafka_topic, kafka_partition, kafka_offset
    received_at      timestamptz        when the row was written

Inserts use ``ON CONFLICT (id) DO NOTHING``, so redeliveries and replays are harmless.
``send_batch`` writes many events in one statement (``unnest`` over arrays): one round
trip, one transaction. PostgreSQL cannot store ``\\u0000`` in ``jsonb``; such a body is
a non-retriable error (the event goes to the dead-letter topic).

Errors: connection problems, timeouts, lack of resources and serialization failures are
retriable; data and constraint errors are not. The DSN (a secret: it may carry a
password) never appears in a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import asyncpg
import orjson
from pydantic import Field, SecretStr

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import StrictModel
from webhook_common.contract import parse_time
from webhook_common.errors import ContractError

_IDENT = r"[a-z_][a-z0-9_]{0,62}"
# SQLSTATE classes worth retrying: connection, transaction rollback (serialization,
# deadlock), insufficient resources, object not available (lock), operator
# intervention (shutdown), system error.
_RETRIABLE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
_COLUMNS = (
    "id",
    "source",
    "type",
    "key",
    "time",
    "content_type",
    "headers",
    "body",
    "body_is_json",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
_ARRAY_TYPES = (
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "timestamptz[]",
    "text[]",
    "jsonb[]",
    "jsonb[]",
    "boolean[]",
    "text[]",
    "integer[]",
    "bigint[]",
)


class PostgresSinkConfig(StrictModel):
    dsn: SecretStr = Field(description="postgresql://user:password@host:port/database")
    table: str = Field(default="webhook_events", pattern=rf"^({_IDENT}\.)?{_IDENT}$")
    create_table: bool = True
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=100)
    command_timeout_seconds: float = Field(default=10.0, gt=0, le=600)


def _quoted(table: str) -> str:
    return ".".join(f'"{part}"' for part in table.split("."))


def _row(event: Event, where: str) -> tuple[Any, ...]:
    try:
        time = parse_time(event.time)
    except ContractError as exc:
        raise SinkError(f"{where}: event {event.id!r}: {exc}", retriable=False) from None
    try:
        event.json()
        body, is_json = event.body.decode("utf-8"), True  # already valid JSON text
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        body, is_json = orjson.dumps(event.body.decode("utf-8", "replace")).decode(), False
    return (
        event.id,
        event.source,
        event.type,
        event.key,
        time,
        event.content_type,
        orjson.dumps(dict(event.headers)).decode(),
        body,
        is_json,
        event.topic,
        event.partition,
        event.offset,
    )


def _classify(exc: BaseException) -> bool:
    """Whether retrying the same insert may succeed."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in _RETRIABLE_CLASSES
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError)


class PostgresSink:
    """Inserts events through an asyncpg pool."""

    Config: ClassVar[type[PostgresSinkConfig]] = PostgresSinkConfig

    def __init__(self, name: str, config: PostgresSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._where = f"postgres sink {name!r} (table {config.table})"
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        # The table name is a validated identifier (see the Config pattern), so
        # formatting it into SQL is safe; values always travel as parameters.
        table = _quoted(config.table)
        columns = ", ".join(_COLUMNS)
        placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
        self._insert_one = (
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT (id) DO NOTHING"  # noqa: S608
        )
        arrays = ", ".join(f"${i}::{t}" for i, t in enumerate(_ARRAY_TYPES, start=1))
        self._insert_many = (
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "  # noqa: S608
            "ON CONFLICT (id) DO NOTHING"
        )

    def create_table_sql(self) -> str:
        table = _quoted(self.config.table)
        return f"""
            CREATE TABLE IF NOT EXISTS {table} (
                seq bigint GENERATED ALWAYS AS IDENTITY,
                id text PRIMARY KEY,
                source text NOT NULL,
                type text NOT NULL,
                key text NOT NULL,
                time timestamptz NOT NULL,
                content_type text NOT NULL,
                headers jsonb NOT NULL,
                body jsonb NOT NULL,
                body_is_json boolean NOT NULL,
                kafka_topic text NOT NULL,
                kafka_partition integer NOT NULL,
                kafka_offset bigint NOT NULL,
                received_at timestamptz NOT NULL DEFAULT clock_timestamp()
            )"""

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"{self._where} is closed", retriable=True)
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.config.dsn.get_secret_value(),
                min_size=min(self.config.pool_min_size, self.config.pool_max_size),
                max_size=self.config.pool_max_size,
                command_timeout=self.config.command_timeout_seconds,
            )
        except Exception as exc:
            # asyncpg's messages may quote the DSN: name the error type only.
            raise SinkError(
                f"{self._where}: cannot connect to PostgreSQL ({type(exc).__name__})",
                retriable=True,
            ) from None
        try:
            if self.config.create_table:
                async with pool.acquire() as conn, conn.transaction():
                    # Consumers start together; concurrent CREATE TABLE IF NOT EXISTS
                    # can still collide in the catalog, so take a lock per table name.
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))", self.config.table
                    )
                    await conn.execute(self.create_table_sql())
        except Exception as exc:
            await pool.close()
            raise self._error("cannot create the table", exc) from None
        self._pool = pool

    def _error(self, action: str, exc: BaseException) -> SinkError:
        detail = type(exc).__name__
        if isinstance(exc, asyncpg.PostgresError):
            detail = f"{detail} [{exc.sqlstate}]: {exc.args[0] if exc.args else ''}"
        return SinkError(f"{self._where}: {action}: {detail}", retriable=_classify(exc))

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            state = "closed" if self._closed else "not started"
            raise SinkError(f"{self._where} is {state}", retriable=True)
        return self._pool

    async def send(self, event: Event) -> None:
        pool = self._require_pool()
        row = _row(event, self._where)
        try:
            await pool.execute(self._insert_one, *row)
        except Exception as exc:
            raise self._error(f"cannot insert event {event.id!r}", exc) from None

    async def send_batch(self, events: Sequence[Event]) -> None:
        if not events:
            return
        pool = self._require_pool()
        rows = [_row(e, self._where) for e in events]
        columns = [list(column) for column in zip(*rows, strict=True)]
        try:
            await pool.execute(self._insert_many, *columns)
        except Exception as exc:
            raise self._error(f"cannot insert {len(events)} events", exc) from None

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
