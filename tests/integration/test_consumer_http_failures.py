"""Acceptance: an HTTP sink down then up is retried and delivered; a permanently failing
sink dead-letters, and ``replay`` delivers the dead letters once the sink is fixed."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from tests.consumers.harness import (
    ROOT,
    ConsumerProcess,
    TargetServer,
    consumers_running,
    free_port,
    meta,
    produce,
    read_topic,
    wait_until,
    write_config,
)
from tests.integration.conftest import TopicFactory


def _config(
    tmp_path: Path,
    bootstrap: str,
    raw: str,
    dlq: str,
    url: str,
    redis_url: str | None = None,
    **retry: int,
) -> Path:
    dedup = (
        {"store": "redis", "redis_url": redis_url, "key_prefix": f"t:{uuid.uuid4().hex[:8]}:"}
        if redis_url
        else {"store": "memory"}
    )
    return write_config(
        tmp_path / "c.yaml",
        bootstrap,
        {
            "dedup": dedup,
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {"hook": {"type": "http", "url": url, "timeout_seconds": 5}},
            "routes": [{"name": "all", "sinks": ["hook"]}],
            "retry": {"initial_ms": 50, "max_ms": 400, **retry},
            "commit_interval_ms": 200,
        },
    )


async def test_http_sink_down_then_up_is_retried_and_delivered(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw", partitions=2)
    dlq = await kafka_topic("dlq")
    port = free_port()  # nothing listens yet: connections are refused
    target = TargetServer(port)
    config = _config(tmp_path, kafka_bootstrap, raw, dlq, target.url, max_attempts=1000)
    await produce(kafka_bootstrap, raw, [(meta(f"e{i}", f"k{i % 4}"), b"{}") for i in range(20)])
    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    try:
        with consumers_running(proc):
            await proc.wait_ready()

            async def paused() -> bool:
                # Failing for everything: the sink's circuit opens and deliveries wait.
                return await proc.metric("webhookgw_consumer_sink_circuit_open", sink="hook") == 1

            await wait_until(paused, 60, "the sink's circuit to open while the target is down")
            target.start()
            await wait_until(
                lambda: len({r[0] for r in target.received}) == 20,
                60,
                "20 deliveries after the target came up",
            )
            failed = await proc.metric(
                "webhookgw_consumer_deliveries_total", sink="hook", outcome="retriable_error"
            )
            assert failed >= 5  # consumers.retry.circuit_failures
            assert await proc.metric("webhookgw_consumer_dead_lettered_total") == 0
            assert proc.terminate() == 0
    finally:
        target.stop()
    assert len(target.received) == 20  # each exactly once
    assert await read_topic(kafka_bootstrap, dlq, expect=0, within=1) == []


def _replay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "consumers",
            "--log-format",
            "text",
            "replay",
            "--config",
            str(config),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


async def test_permanent_failure_dead_letters_then_replay_delivers_once(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path, redis_url: str
) -> None:
    raw = await kafka_topic("raw", partitions=2)
    dlq = await kafka_topic("dlq", partitions=2)
    target = TargetServer(status=400).start()  # the target refuses: not retriable
    # Redis dedup: marks outlive the consumer process, so replays see them.
    config = _config(tmp_path, kafka_bootstrap, raw, dlq, target.url, redis_url, max_attempts=3)
    sent = [(meta(f"e{i}", f"k{i % 3}"), b'{"i": %d}' % i) for i in range(10)]
    coords = await produce(kafka_bootstrap, raw, sent)
    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    try:
        with consumers_running(proc):
            await proc.wait_ready()

            async def all_dead() -> bool:
                n = await proc.metric(
                    "webhookgw_consumer_dead_lettered_total", sink="hook", reason="permanent"
                )
                return n == 10

            await wait_until(all_dead, 60, "10 dead letters")
            assert proc.terminate() == 0
        assert target.requests == 10  # 4xx is not retried
        assert target.received == []

        letters = await read_topic(kafka_bootstrap, dlq, expect=10)
        assert len(letters) == 10
        by_id = {dict(r.headers)["ce_id"].decode(): r for r in letters}
        for (m, body), (partition, offset) in zip(sent, coords, strict=True):
            h = dict(by_id[m.id].headers)
            assert by_id[m.id].value == body
            assert by_id[m.id].key == m.subject.encode()
            assert (h["dlq_reason"], h["dlq_sink"], h["dlq_attempts"]) == (
                b"permanent",
                b"hook",
                b"1",
            )
            assert h["dlq_original_topic"] == raw.encode()
            assert (int(h["dlq_original_partition"]), int(h["dlq_original_offset"])) == (
                partition,
                offset,
            )
            assert b"400" in h["dlq_error"]

        dry = _replay(config, "--from-dlq", "--sinks", "hook", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry_run=10" in dry.stdout
        assert target.requests == 10  # a dry run sends nothing

        target.status = 200  # the target is fixed
        res = _replay(config, "--from-dlq", "--sinks", "hook")
        print("\n" + res.stdout.strip())
        assert res.returncode == 0, res.stderr
        assert "delivered=10" in res.stdout
        assert "replay [" in res.stderr  # the progress display
        assert sorted(r[0] for r in target.received) == sorted(m.id for m, _ in sent)
        # Per-key order survives the replay.
        for key in ("k0", "k1", "k2"):
            got = [body for _, subject, body in target.received if subject == key]
            want = [body for m, body in sent if m.subject == key]
            assert got == want

        again = _replay(config, "--from-dlq", "--sinks", "hook")
        assert again.returncode == 0
        assert "duplicate=10" in again.stdout  # dedup: replaying twice delivers once
        assert len(target.received) == 10
    finally:
        target.stop()
