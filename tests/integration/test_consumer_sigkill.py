"""Acceptance: a consumer SIGKILLed mid-stream and restarted loses nothing and, with the
redis dedup store, delivers nothing twice to sinks that know what they hold.

The consumer writes an event's dedup mark only after the sink succeeded (that order is
what makes a crash unable to drop an event). A SIGKILL therefore leaves a window: events
the sink has, whose marks are not written, which the restarted consumer offers again.

* ``file``: closes the window itself; at start it reads the ids in its file's tail and
  does not write those again.
* ``postgres``: closes it by ``ON CONFLICT (id) DO NOTHING``.
* ``http``: cannot know what the target has. The repeats are bounded by the deliveries in
  flight at the kill, at most one per delivery slot (``concurrency.max_parallel``), and
  each carries the event id (``Idempotency-Key``, ``ce-id``) for the target to dedupe.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from consumers.dedup import RedisDedupStore
from tests.consumers.harness import (
    ConsumerProcess,
    TargetServer,
    consumers_running,
    meta,
    produce,
    wait_until,
    write_config,
)
from tests.integration.conftest import TopicFactory
from tests.integration.pg_tables import sink_table

N = 600
KEYS = 60
PARALLEL = 4
# PostgreSQL takes this long per inserted row (a trigger), so the stream lasts seconds
# and the kill lands in the middle of it.
INSERT_DELAY = 0.02
# After the kill, the dedup marks of the file's last lines are removed as well: the
# crash window as a slower mark round trip would leave it, so the file sink's recovery
# is exercised on every run, not only when the kill happens to hit the window.
WIDENED = 8


def complete_lines(path: Path) -> list[bytes]:
    """The file's lines that are whole (a line being written has no newline yet)."""
    if not path.exists():
        return []
    return path.read_bytes().split(b"\n")[:-1]


def parse_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parsed lines, and how many are not JSON (a fragment a killed write left behind)."""
    parsed: list[dict[str, Any]] = []
    fragments = 0
    for line in complete_lines(path):
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            fragments += 1
    return parsed, fragments


@pytest.fixture
async def slow_table(database_url: str) -> AsyncIterator[str]:
    """The postgres sink's own table, created beforehand with a slow insert trigger."""

    def slow(name: str) -> list[str]:
        return [
            f"CREATE FUNCTION {name}_slow() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({INSERT_DELAY}); RETURN NEW; END $$",
            f"CREATE TRIGGER slow BEFORE INSERT ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}_slow()",
        ]

    def drop(name: str) -> list[str]:
        return [f"DROP FUNCTION IF EXISTS {name}_slow()"]

    async with sink_table(database_url, "sigkill", slow, drop) as name:
        yield name


async def test_sigkill_then_restart_file_and_postgres_get_each_event_once(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    tmp_path: Path,
    redis_url: str,
    database_url: str,
    slow_table: str,
) -> None:
    raw = await kafka_topic("raw", partitions=3)
    dlq = await kafka_topic("dlq")
    out = tmp_path / "events.jsonl"
    prefix = f"t:{uuid.uuid4().hex[:8]}:"
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "dedup": {"store": "redis", "redis_url": redis_url, "key_prefix": prefix},
            "sinks": {
                "events_file": {"type": "file", "path": str(out)},
                "db": {"type": "postgres", "dsn": database_url, "table": slow_table},
            },
            "routes": [{"name": "all", "sinks": ["events_file", "db"]}],
            # Commit rarely: the restart re-reads every record, so every record already
            # delivered must be recognised (by redis, or by the sink).
            "commit_interval_ms": 60_000,
            "concurrency": {"max_parallel": PARALLEL},
        },
    )
    events = [(meta(f"e{i}", f"k{i % KEYS}"), orjson.dumps({"n": i})) for i in range(N)]
    coordinates = await produce(kafka_bootstrap, raw, events)
    produced = {m.id: coords for (m, _), coords in zip(events, coordinates, strict=True)}
    ids = set(produced)

    marks = RedisDedupStore.from_url(redis_url, 60, prefix, 100)
    client = aioredis.from_url(redis_url)
    conn = await asyncpg.connect(database_url)
    first = ConsumerProcess(config, tmp_path / "first.log").start()
    second = ConsumerProcess(config, tmp_path / "second.log")
    try:
        with consumers_running(first, second):
            await first.wait_ready()
            await wait_until(
                lambda: len(complete_lines(out)) >= N // 4, 60, "a quarter in the file"
            )
            first.kill()  # SIGKILL: no drain, no commit, no goodbye
            file_at_kill = complete_lines(out)

            async def killed_statements_done() -> bool:
                # A statement the dead consumer sent may still be running; let it end.
                active = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND pid <> pg_backend_pid() AND query LIKE $1",
                    f"%{slow_table}%",
                )
                return bool(active == 0)

            await wait_until(killed_statements_done, 30, "the killed consumer's inserts")
            rows_at_kill = await conn.fetchval(f"SELECT count(*) FROM {slow_table}")

            # Widen the crash window (see WIDENED).
            last_ids = [orjson.loads(line)["id"] for line in file_at_kill[-WIDENED:]]
            unmarked_file = await client.delete(*(marks.key(i, "events_file") for i in last_ids))
            unmarked_db = await client.delete(*(marks.key(i, "db") for i in last_ids))

            second.start()
            await second.wait_ready()

            async def everything_delivered() -> bool:
                rows = await conn.fetchval(f"SELECT count(*) FROM {slow_table}")
                return rows >= N and len({line["id"] for line in parse_lines(out)[0]}) >= N

            await wait_until(everything_delivered, 120, "every event in both sinks")

            async def settled() -> bool:
                return await second.metric("webhookgw_consumer_in_flight") == 0

            await wait_until(settled, 30, "the restarted consumer to finish")
            reread = await second.metric("webhookgw_consumer_consumed_total")
            skipped_file = await second.metric(
                "webhookgw_consumer_duplicates_skipped_total", sink="events_file"
            )
            skipped_db = await second.metric(
                "webhookgw_consumer_duplicates_skipped_total", sink="db"
            )
            sent_file = await second.metric(
                "webhookgw_consumer_deliveries_total", sink="events_file", outcome="success"
            )
            sent_db = await second.metric(
                "webhookgw_consumer_deliveries_total", sink="db", outcome="success"
            )
            recovered = await second.metric("webhookgw_file_sink_recovered_ids", sink="events_file")
            already_written = await second.metric(
                "webhookgw_file_sink_already_written_total", sink="events_file"
            )
            assert second.terminate() == 0
        rows = await conn.fetch(
            f"SELECT id, key, kafka_partition, kafka_offset FROM {slow_table} ORDER BY seq"
        )
    finally:
        await conn.close()
        await client.aclose()
        await marks.aclose()

    lines, fragments = parse_lines(out)
    file_counts = Counter(line["id"] for line in lines)
    row_counts = Counter(row["id"] for row in rows)
    file_dups = sorted(i for i, c in file_counts.items() if c > 1)
    row_dups = sorted(i for i, c in row_counts.items() if c > 1)
    print(
        f"\nSIGKILL with {len(file_at_kill)} of {N} events in the file and {rows_at_kill} "
        f"in PostgreSQL; then removed the redis marks of the file's last {WIDENED} lines: "
        f"{unmarked_file} of the file sink, {unmarked_db} of the postgres sink.\n"
        f"Restarted consumer read {int(reread)} records: file sink: {int(skipped_file)} "
        f"skipped by redis, {int(already_written)} not rewritten by the file's recovery "
        f"({int(recovered)} ids read from its tail), "
        f"{int(sent_file - already_written)} written; postgres: {int(skipped_db)} skipped "
        f"by redis, {int(sent_db)} inserts sent, {len(rows) - rows_at_kill} rows added "
        f"({int(sent_db) - (len(rows) - rows_at_kill)} absorbed by ON CONFLICT).\n"
        f"Lost: file {len(ids - set(file_counts))}, postgres {len(ids - set(row_counts))}; "
        f"duplicates: file {len(file_dups)}, postgres {len(row_dups)}; "
        f"torn fragments in the file: {fragments}"
    )

    assert len(file_at_kill) < N  # the kill did land mid-stream
    assert set(file_counts) == ids  # nothing lost
    assert set(row_counts) == ids
    assert file_dups == []  # nothing twice
    assert row_dups == []
    assert len(lines) == len(rows) == N
    # No commit happened before the kill, so every record was read again, and every one
    # the file held was recognised: by its redis mark or by the file's own recovery.
    assert reread == N
    assert recovered == len(file_at_kill)
    assert skipped_file + already_written == len(file_at_kill)
    assert already_written >= unmarked_file > 0
    assert unmarked_file <= WIDENED

    # Per key, both sinks hold the events in offset order, at their produced offsets.
    for name, records in (("file", lines), ("postgres", rows)):
        per_key: defaultdict[str, list[int]] = defaultdict(list)
        for record in records:
            if name == "file":
                event_id, key, where = record["id"], record["key"], record["kafka"]
                partition, offset = where["partition"], where["offset"]
            else:
                event_id, key = record["id"], record["key"]
                partition, offset = record["kafka_partition"], record["kafka_offset"]
            assert produced[event_id] == (partition, offset), f"{name}: {event_id}"
            per_key[key].append(offset)
        for key, offsets in per_key.items():
            assert offsets == sorted(offsets), f"{name}: {key} out of offset order"


async def test_sigkill_then_restart_http_repeats_at_most_the_in_flight_deliveries(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path, redis_url: str
) -> None:
    raw = await kafka_topic("raw", partitions=3)
    dlq = await kafka_topic("dlq")
    target = TargetServer(delay=0.01).start()  # 10 ms per delivery: slow enough to interrupt
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "dedup": {
                "store": "redis",
                "redis_url": redis_url,
                "key_prefix": f"t:{uuid.uuid4().hex[:8]}:",
            },
            "sinks": {"hook": {"type": "http", "url": target.url}},
            "routes": [{"name": "all", "sinks": ["hook"]}],
            "commit_interval_ms": 60_000,
            "concurrency": {"max_parallel": PARALLEL},
        },
    )
    ids = [f"e{i}" for i in range(N)]
    await produce(kafka_bootstrap, raw, [(meta(i, f"k{n % 50}"), b"{}") for n, i in enumerate(ids)])

    first = ConsumerProcess(config, tmp_path / "first.log").start()
    second = ConsumerProcess(config, tmp_path / "second.log")
    try:
        with consumers_running(first, second):
            await first.wait_ready()
            await wait_until(lambda: len(target.received) >= N // 4, 60, "a quarter delivered")
            first.kill()
            before_restart = len(target.received)

            second.start()
            await second.wait_ready()
            await wait_until(
                lambda: len({r[0] for r in target.received}) == N,
                120,
                "every event delivered after the restart",
            )

            async def settled() -> bool:
                return await second.metric("webhookgw_consumer_in_flight") == 0

            await wait_until(settled, 30, "the restarted consumer to finish")
            reread = await second.metric("webhookgw_consumer_consumed_total")
            skipped = await second.metric("webhookgw_consumer_duplicates_skipped_total")
            assert second.terminate() == 0
    finally:
        target.stop()

    counts = Counter(r[0] for r in target.received)
    delivered_twice = sorted(i for i, c in counts.items() if c > 1)
    print(
        f"\nhttp: SIGKILL after {before_restart} of {N} deliveries; the restarted consumer "
        f"read {int(reread)}, skipped {int(skipped)} by redis dedup; lost "
        f"{N - len(counts)}; delivered twice {len(delivered_twice)} {delivered_twice} "
        f"(bound: {PARALLEL} delivery slots)"
    )
    assert before_restart < N  # the kill did land mid-stream
    assert set(counts) == set(ids)  # nothing lost
    assert skipped > 0  # records re-read after the kill were recognised
    # The only possible repeats are deliveries under way at the instant of the kill (the
    # target took them, the mark was not written yet): at most one per delivery slot.
    assert len(delivered_twice) <= PARALLEL
    assert all(c <= 2 for c in counts.values())
