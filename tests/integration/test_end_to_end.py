"""Acceptance: gateway + consumers end to end. Signed webhooks, some sent twice, arrive
exactly once per sink and in per-key order, in the file and PostgreSQL sinks."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import defaultdict
from pathlib import Path

import asyncpg
import httpx
import orjson
import yaml

from gateway.verifiers.crystallize import sign_hmac
from tests.consumers.harness import (
    ROOT,
    ConsumerProcess,
    consumers_running,
    free_port,
    read_jsonl,
    wait_until,
)
from tests.gateway.support import serve_argv
from tests.integration.conftest import TopicFactory

SECRET = "e2e-signature-secret-0123456789"
ORDERS = 8
EVENTS = 48


async def test_signed_webhooks_arrive_once_per_sink_in_key_order(
    kafka_bootstrap: str, kafka_topic: TopicFactory, database_url: str, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw", partitions=3)
    dlq = await kafka_topic("dlq", partitions=1)
    table = f"e2e_{uuid.uuid4().hex[:10]}"
    out = tmp_path / "events.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "gateway": {"log_format": "text"},
                "sources": [
                    {
                        "name": "crystallize",
                        "path": "/webhooks/crystallize",
                        "verifier": {"type": "crystallize", "mode": "hmac"},
                        "secrets": ["${CRYSTALLIZE_SIGNATURE_SECRET}"],
                        "topic": raw,
                    }
                ],
                "consumers": {
                    "group": f"g-{uuid.uuid4().hex[:8]}",
                    "topics": [raw],
                    "dlq_topic": dlq,
                    "sinks": {
                        "events_file": {"type": "file", "path": str(out), "fsync": "batch"},
                        "pg": {"type": "postgres", "dsn": database_url, "table": table},
                    },
                    "routes": [{"name": "everything", "sinks": ["events_file", "pg"]}],
                },
            }
        )
    )
    env = {**os.environ, "CRYSTALLIZE_SIGNATURE_SECRET": SECRET}
    port, admin = free_port(), free_port()
    with (tmp_path / "gw.log").open("wb") as gw_log:
        gateway = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited on)
            serve_argv(config, port, admin),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=gw_log,
        )
    consumer = ConsumerProcess(config, tmp_path / "consumer.log")
    conn = await asyncpg.connect(database_url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def gateway_ready() -> bool:
                if gateway.poll() is not None:
                    raise AssertionError((tmp_path / "gw.log").read_text()[-3000:])
                try:
                    r = await client.get(f"http://127.0.0.1:{admin}/readyz")
                except httpx.HTTPError:
                    return False
                return r.status_code == 200

            await wait_until(gateway_ready, 60, "the gateway's /readyz")
            bodies = [
                orjson.dumps({"order": {"get": {"id": f"order-{i % ORDERS}", "seq": i}}})
                for i in range(EVENTS)
            ]
            resent = [bodies[i] for i in (0, 5, 5, 17, 30, 47)]  # the provider retried
            for body in bodies + resent:
                r = await client.post(
                    f"http://127.0.0.1:{port}/webhooks/crystallize",
                    content=body,
                    headers={
                        "content-type": "application/json",
                        "x-crystallize-signature": sign_hmac(SECRET, body),
                    },
                )
                assert r.status_code == 202, r.text

        consumer.start()
        with consumers_running(consumer):
            await consumer.wait_ready()

            async def both_sinks_full() -> bool:
                rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
                return len(read_jsonl(out)) >= EVENTS and rows >= EVENTS

            await wait_until(both_sinks_full, 90, f"{EVENTS} events in both sinks")

            async def settled() -> bool:
                consumed = await consumer.metric("webhookgw_consumer_consumed_total")
                in_flight = await consumer.metric("webhookgw_consumer_in_flight")
                return consumed >= EVENTS + len(resent) and in_flight == 0

            await wait_until(settled, 30, "every record processed")
            assert await consumer.metric("process_resident_memory_bytes") > 0
            assert await consumer.metric("webhookgw_build_info", component="consumers") == 1
            skipped_file = await consumer.metric(
                "webhookgw_consumer_duplicates_skipped_total", sink="events_file"
            )
            skipped_pg = await consumer.metric(
                "webhookgw_consumer_duplicates_skipped_total", sink="pg"
            )
            assert consumer.terminate() == 0, consumer.logs()

        lines = read_jsonl(out)
        rows = await conn.fetch(f"SELECT id, key, body, seq FROM {table} ORDER BY seq")
        print(
            f"\n{EVENTS + len(resent)} webhooks ({len(resent)} resent): file {len(lines)} "
            f"lines, postgres {len(rows)} rows; duplicates skipped file={skipped_file:.0f} "
            f"pg={skipped_pg:.0f}"
        )
        # Exactly once per sink.
        assert len(lines) == EVENTS == len({line["id"] for line in lines})
        assert len(rows) == EVENTS
        assert {line["id"] for line in lines} == {row["id"] for row in rows}
        assert skipped_file == skipped_pg == len(resent)
        # Per-key order: seq ascending per order id, in the file's line order and in the
        # table's insertion order.
        file_order: dict[str, list[int]] = defaultdict(list)
        for line in lines:
            file_order[line["key"]].append(line["body"]["order"]["get"]["seq"])
        pg_order: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            pg_order[row["key"]].append(orjson.loads(row["body"])["order"]["get"]["seq"])
        expected = {f"order-{k}": list(range(k, EVENTS, ORDERS)) for k in range(ORDERS)}
        assert dict(file_order) == expected
        assert dict(pg_order) == expected
    finally:
        consumer.stop_quietly()
        gateway.terminate()
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait(10)
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
