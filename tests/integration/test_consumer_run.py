"""``python -m consumers run`` against the real broker: delivery, dedup, DLQ, commits."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path

import httpx

from tests.consumers.harness import (
    ConsumerProcess,
    committed,
    consumers_running,
    meta,
    produce,
    read_jsonl,
    read_topic,
    wait_until,
    write_config,
)
from tests.integration.conftest import TopicFactory


async def test_run_delivers_in_key_order_dedups_dead_letters_and_commits(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw", partitions=3)
    dlq = await kafka_topic("dlq", partitions=1)
    out = tmp_path / "events.jsonl"
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "group": group,
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {"events": {"type": "file", "path": str(out), "fsync": "never"}},
            "routes": [{"name": "orders", "match": {"type": "order.*"}, "sinks": ["events"]}],
            "unrouted": "dead-letter",
            "commit_interval_ms": 200,
        },
    )
    events = [(meta(f"e{i}", f"key{i % 10}"), b'{"n": %d}' % i) for i in range(60)]
    repeats = [events[i] for i in (3, 17, 17, 42, 59)]  # the provider re-sent these
    unrouted = [(meta("u1", "key1", type_="customer.created"), b"{}")]
    await produce(kafka_bootstrap, raw, events + repeats + unrouted)
    # A record that breaks the contract (no ce_id): dead-lettered, not delivered.
    bad = meta("x", "key2")
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            raw, b"junk", key=b"key2", headers=[h for h in bad.to_headers() if h[0] != "ce_id"]
        )
    finally:
        await producer.stop()

    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    with consumers_running(proc):
        await proc.wait_ready()
        await wait_until(lambda: len(read_jsonl(out)) >= 60, 60, "60 lines in the file sink")
        await wait_until(lambda: _all_done(proc, 67), 30, "all 67 records finished")
        assert await proc.metric("webhookgw_consumer_duplicates_skipped_total", sink="events") == 5
        # Caught up: no partition has an unfinished record, so no age either.
        await wait_until(
            lambda: _lag_seconds_zero(proc), 30, "lag in seconds back to 0 on every partition"
        )
        assert await proc.metric("webhookgw_consumer_unrouted_total", action="dead-letter") == 1
        assert await proc.metric("webhookgw_consumer_dead_lettered_total", reason="contract") == 1
        assert (
            await proc.metric(
                "webhookgw_consumer_deliveries_total", sink="events", outcome="success"
            )
            == 60
        )
        assert proc.terminate() == 0, proc.logs()

    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines) == sorted(f"e{i}" for i in range(60))
    per_key: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        per_key[line["key"]].append(line["body"]["n"])
    for key, ns in per_key.items():
        assert ns == sorted(ns), f"{key} out of order: {ns}"
    assert {line["kafka"]["topic"] for line in lines} == {raw}

    letters = await read_topic(kafka_bootstrap, dlq, expect=2)
    reasons = sorted(dict(r.headers)["dlq_reason"] for r in letters)
    assert reasons == [b"contract", b"unrouted"]
    contract = next(r for r in letters if dict(r.headers)["dlq_reason"] == b"contract")
    assert (contract.key, contract.value) == (b"key2", b"junk")
    assert dict(contract.headers)["dlq_original_topic"] == raw.encode()

    # Everything was finished, so the group committed the end of every partition.
    offsets = await committed(kafka_bootstrap, group, raw)
    assert sum(offsets.values()) == 67, (offsets, proc.logs())


async def _all_done(proc: ConsumerProcess, n: int) -> bool:
    consumed = await proc.metric("webhookgw_consumer_consumed_total")
    in_flight = await proc.metric("webhookgw_consumer_in_flight")
    return consumed >= n and in_flight == 0


async def test_a_new_group_set_to_latest_skips_the_backlog_and_delivers_what_follows(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw")
    dlq = await kafka_topic("dlq")
    out = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {"events": {"type": "file", "path": str(out), "fsync": "never"}},
            "routes": [{"name": "all", "sinks": ["events"]}],
            "auto_offset_reset": "latest",
        },
    )
    await produce(kafka_bootstrap, raw, [(meta(f"old{i}", "k"), b"{}") for i in range(3)])
    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    sent = 0
    with consumers_running(proc):
        await proc.wait_ready()

        async def a_new_one_delivered() -> bool:
            # Until the group has its position, a record may land before "latest".
            nonlocal sent
            if read_jsonl(out):
                return True
            await produce(kafka_bootstrap, raw, [(meta(f"new{sent}", "k"), b"{}")])
            sent += 1
            return False

        await wait_until(a_new_one_delivered, 60, "a record produced after the start", 0.5)
        assert proc.terminate() == 0, proc.logs()
    ids = [line["id"] for line in read_jsonl(out)]
    assert ids
    assert all(i.startswith("new") for i in ids), ids


async def _lag_seconds_zero(proc: ConsumerProcess) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(proc.url + "/metrics")).text
    ages = [
        line for line in text.splitlines() if line.startswith("webhookgw_consumer_lag_seconds{")
    ]
    return len(ages) == 3 and all(line.endswith(" 0.0") for line in ages)
