"""Acceptance: a record as large as the gateway writes (a body at the default 1 MiB
``body_limit``) that a sink refuses is dead-lettered, whole when the dead-letter topic
holds it and as a small reference when it does not; its partition goes on either way."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from tests.consumers.harness import (
    ConsumerProcess,
    TargetServer,
    committed,
    consumers_running,
    meta,
    produce,
    read_topic,
    wait_until,
    write_config,
)
from tests.integration.conftest import TopicFactory

# What `gateway topics create` gives its topics: the default body_limit plus 64 KiB.
RECORD_LIMIT = 1024 * 1024 + 64 * 1024
BODY = b'"' + b"x" * (1024 * 1024 - 2) + b'"'  # 1 MiB: a body at the gateway's limit


async def _refused_by_the_sink(
    bootstrap: str, raw: str, dlq: str, tmp_path: Path, target: TargetServer
) -> tuple[ConsumerProcess, list[tuple[int, int]], str]:
    """Start a consumer whose only sink (``target``) refuses everything, after producing
    a large event and then a small one of the same key."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = write_config(
        tmp_path / "c.yaml",
        bootstrap,
        {
            "group": group,
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {"hook": {"type": "http", "url": target.url, "timeout_seconds": 10}},
            "routes": [{"name": "all", "sinks": ["hook"]}],
            "commit_interval_ms": 200,
        },
    )
    events = [(meta("big", "k"), BODY), (meta("small", "k"), b'{"after": "big"}')]
    coords = await produce(bootstrap, raw, events, max_request_size=RECORD_LIMIT)
    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    return proc, coords, group


async def test_a_large_refused_record_is_dead_lettered_whole(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    sized = {"max.message.bytes": str(RECORD_LIMIT)}
    raw = await kafka_topic("raw", config=sized)
    dlq = await kafka_topic("dlq", config=sized)  # as `gateway topics create` makes it
    target = TargetServer(status=400).start()  # the target refuses: not retriable
    try:
        proc, coords, group = await _refused_by_the_sink(
            kafka_bootstrap, raw, dlq, tmp_path, target
        )
        with consumers_running(proc):
            await proc.wait_ready()

            async def both_dead() -> bool:
                n = await proc.metric("webhookgw_consumer_dead_lettered_total", sink="hook")
                return n == 2

            await wait_until(both_dead, 30, "2 dead letters")
            letters = await read_topic(kafka_bootstrap, dlq, expect=2)
            assert [dict(r.headers)["ce_id"] for r in letters] == [b"big", b"small"]
            assert letters[0].value == BODY  # byte for byte
            assert dict(letters[0].headers)["dlq_reason"] == b"permanent"
            await wait_until(
                lambda: _at(kafka_bootstrap, group, raw, coords[-1]),
                30,
                "the commit past both records",
            )
            assert proc.terminate() == 0
    finally:
        target.stop()


async def _at(bootstrap: str, group: str, topic: str, last: tuple[int, int]) -> bool:
    partition, offset = last
    return (await committed(bootstrap, group, topic)).get(partition) == offset + 1


async def test_a_dead_letter_too_large_for_its_topic_becomes_a_reference(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw", config={"max.message.bytes": str(RECORD_LIMIT)})
    dlq = await kafka_topic("dlq")  # the broker default: about 1 MiB, less than the record
    target = TargetServer(status=400).start()  # the target refuses: not retriable
    try:
        proc, coords, group = await _refused_by_the_sink(
            kafka_bootstrap, raw, dlq, tmp_path, target
        )
        with consumers_running(proc):
            await proc.wait_ready()

            async def both_dead() -> bool:
                n = await proc.metric("webhookgw_consumer_dead_lettered_total", sink="hook")
                return n == 2

            await wait_until(both_dead, 30, "2 dead letters")
            assert (
                await proc.metric(
                    "webhookgw_consumer_dead_lettered_total", sink="hook", reason="too_large"
                )
                == 1
            )
            reference, small = await read_topic(kafka_bootstrap, dlq, expect=2)
            partition, offset = coords[0]
            assert orjson.loads(reference.value) == {
                "reason": "too_large",
                "original_reason": "permanent",
                "topic": raw,
                "partition": partition,
                "offset": offset,
                "event_id": "big",
                "value_bytes": len(BODY),
            }
            assert reference.key == b"k"
            assert dict(reference.headers)["dlq_reason"] == b"too_large"
            assert dict(small.headers)["ce_id"] == b"small"
            assert small.value == b'{"after": "big"}'
            await wait_until(
                lambda: _at(kafka_bootstrap, group, raw, coords[-1]),
                30,
                "the commit past both records",
            )
            assert "too large for the dead-letter topic" in proc.logs()
            assert proc.terminate() == 0
    finally:
        target.stop()
