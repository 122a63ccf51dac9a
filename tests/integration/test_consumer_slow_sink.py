"""Acceptance: a slow sink (20 ms per call) on one partition with many keys — per-key
order holds, and throughput is far above one-at-a-time (printed, not asserted)."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

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

N = 300
KEYS = 60


async def _run(
    bootstrap: str, raw: str, dlq: str, tmp_path: Path, parallel: int
) -> tuple[float, TargetServer]:
    target = TargetServer(delay=0.02).start()
    config = write_config(
        tmp_path / f"c{parallel}.yaml",
        bootstrap,
        {
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {"slow": {"type": "http", "url": target.url}},
            "routes": [{"name": "all", "sinks": ["slow"]}],
            "concurrency": {"max_parallel": parallel},
        },
    )
    proc = ConsumerProcess(config, tmp_path / f"consumer{parallel}.log").start()
    try:
        with consumers_running(proc):
            await proc.wait_ready()
            # Timed from the first delivery: start-up and group join are not throughput.
            await wait_until(lambda: target.received, 60, "the first delivery", interval=0.005)
            started = time.monotonic()
            await wait_until(
                lambda: len(target.received) >= N, 120, f"{N} deliveries", interval=0.01
            )
            elapsed = time.monotonic() - started
            assert proc.terminate() == 0
    finally:
        target.stop()
    return elapsed, target


async def test_slow_sink_many_keys_keeps_key_order_and_runs_in_parallel(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw", partitions=1)
    dlq = await kafka_topic("dlq")
    events = [(meta(f"e{i}", f"k{i % KEYS}"), b'{"seq": %d}' % i) for i in range(N)]
    await produce(kafka_bootstrap, raw, events)

    serial, _ = await _run(kafka_bootstrap, raw, dlq, tmp_path, parallel=1)
    parallel, target = await _run(kafka_bootstrap, raw, dlq, tmp_path, parallel=64)

    per_key: dict[str, list[bytes]] = defaultdict(list)
    for _, key, body in target.received:
        per_key[key].append(body)
    for key, bodies in per_key.items():
        want = [body for m, body in events if m.subject == key]
        assert bodies == want, f"{key} out of order"
    assert len(target.received) == N
    print(
        f"\nslow sink 20 ms/call, 1 partition, {KEYS} keys, {N} events: one-at-a-time "
        f"{N / serial:.0f}/s ({serial:.2f} s), key-parallel(64) {N / parallel:.0f}/s "
        f"({parallel:.2f} s): x{serial / parallel:.1f}"
    )
