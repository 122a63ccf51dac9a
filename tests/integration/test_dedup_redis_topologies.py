"""The redis dedup store beyond one server, on real deployments started here: a Redis
Cluster (three masters, a replica each) whose node holding a key's slot fails over
during delivery, Sentinel, TLS with client certificates, and ACL users."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumers.config import DedupConfig
from consumers.dedup import RedisDedupStore
from tests.consumers.harness import (
    ROOT,
    ConsumerProcess,
    TargetServer,
    consumers_running,
    meta,
    produce,
    read_topic,
    wait_until,
    write_config,
)
from tests.integration import redis_servers
from tests.integration.conftest import TopicFactory
from webhook_common.contract import EventMeta
from webhook_common.errors import ConfigError

SINK = "hook"


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[redis_servers.Cluster]:
    """``redis_url`` marks the test and, under CI, fails it when Redis cannot be had."""
    c = redis_servers.start_cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def sentinel(redis_url: str, tmp_path: Path) -> Iterator[redis_servers.SentinelSet]:
    s = redis_servers.start_sentinel(tmp_path / "sentinel")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def tls_redis(redis_url: str, tmp_path: Path) -> Iterator[redis_servers.TlsRedis]:
    t = redis_servers.start_tls(tmp_path / "tls")
    try:
        yield t
    finally:
        t.node.stop()


def _prefix() -> str:
    return f"webhookgw:{uuid.uuid4().hex[:8]}:"  # inside the ACL user's ~webhookgw:*


async def test_cluster_checks_and_marks_across_slots_in_few_round_trips(
    cluster: redis_servers.Cluster,
) -> None:
    config = DedupConfig(
        store="redis", redis_url=SecretStr(cluster.url), redis_mode="cluster", key_prefix=_prefix()
    )
    store = RedisDedupStore.from_config(config)
    try:
        await store.start()
        ids = [f"e{i}" for i in range(1000)]
        await asyncio.gather(*(store.mark(i, SINK) for i in ids[:500]))
        marks = store.round_trips
        seen = await asyncio.gather(*(store.seen(i, SINK) for i in ids))
        assert seen == [True] * 500 + [False] * 500
        assert marks <= 2  # batches of 500
        assert store.round_trips - marks <= 3
        # The keys really are spread over the three masters.
        masters = {cluster.master_of(store.key(i, SINK)).port for i in ids[:500]}
        assert len(masters) == 3
    finally:
        await store.aclose()


def _replicated(master: redis_servers.Node, replica: redis_servers.Node) -> bool:
    def offset(info: str, key: str) -> int:
        line = next(x for x in info.splitlines() if x.startswith(key + ":"))
        return int(line.split(":")[1])

    return offset(master.cli("INFO", "replication"), "master_repl_offset") == offset(
        replica.cli("INFO", "replication"), "slave_repl_offset"
    )


@pytest.mark.parametrize("how", ["graceful", "abrupt"])
async def test_cluster_failover_during_delivery_loses_nothing_and_duplicates_nothing(
    how: str,
    cluster: redis_servers.Cluster,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    tmp_path: Path,
) -> None:
    """Deliveries run while the master holding the slot of the first event's mark fails
    over: gracefully (``CLUSTER FAILOVER`` on its replica, as upgrades and managed
    services do it) or abruptly (the master is SIGKILLed and the cluster promotes the
    replica). Every event reaches the sink once; every duplicate — of events marked
    before, during and after the failover — is recognised."""
    raw = await kafka_topic("raw", partitions=4)
    dlq = await kafka_topic("dlq")
    prefix = _prefix()
    target = TargetServer()
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "dedup": {
                "store": "redis",
                "redis_url": cluster.url,
                "redis_mode": "cluster",
                "key_prefix": prefix,
            },
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {SINK: {"type": "http", "url": target.url, "timeout_seconds": 5}},
            "routes": [{"name": "all", "sinks": [SINK]}],
            "retry": {"initial_ms": 50, "max_ms": 500, "max_attempts": 1000},
            "commit_interval_ms": 200,
        },
    )

    def event(i: str) -> tuple[EventMeta, bytes]:
        return meta(i, f"k{hash(i) % 8}"), b"{}"

    before = [f"a{i}" for i in range(300)]
    during = [f"b{i}" for i in range(400)]
    target.start()
    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    try:
        with consumers_running(proc):
            await proc.wait_ready()
            await produce(kafka_bootstrap, raw, [event(i) for i in before])
            await wait_until(lambda: len(target.delivered) == 300, 60, "the first 300")

            victim = cluster.master_of(f"{prefix}{SINK}:a0")
            replica = cluster.replica_of(victim)
            await wait_until(lambda: _replicated(victim, replica), 10, "marks replicated")

            async def feed() -> None:
                # New events interleaved with duplicates of the first ones, for ~4 s.
                for n in range(40):
                    batch = during[n * 10 : n * 10 + 10] + before[n * 7 : n * 7 + 7]
                    await produce(kafka_bootstrap, raw, [event(i) for i in batch])
                    await asyncio.sleep(0.1)

            feeding = asyncio.create_task(feed())
            await asyncio.sleep(1.0)
            delivered_before = set(target.delivered)
            delivered_at_failover = len(delivered_before)
            if how == "graceful":
                replica.cli("CLUSTER", "FAILOVER")
            else:
                victim.kill()
            await feeding
            await wait_until(
                lambda: "role:master" in replica.cli("INFO", "replication"),
                30,
                "the replica promoted",
            )
            cluster.wait_ok()
            # Duplicates of everything, marked before, during and after the failover.
            await produce(kafka_bootstrap, raw, [event(i) for i in before + during])
            await wait_until(lambda: len(target.delivered) == 700, 90, "all 700 events")
            sentinel = f"z{uuid.uuid4().hex[:6]}"  # the last record: all before it is done
            await produce(kafka_bootstrap, raw, [event(sentinel)])
            await wait_until(lambda: sentinel in target.delivered, 60, "the last event")
            errors = await proc.metric("webhookgw_consumer_dedup_errors_total")
            dead = await proc.metric("webhookgw_consumer_dead_lettered_total")
            assert proc.terminate() == 0
            # Marks of events first delivered after the failover sit on the promoted
            # replica: deliveries did go through the slots that changed hands.
            on_replica = {k.rsplit(":", 1)[1] for k in replica.cli("KEYS", f"{prefix}*").split()}
            moved = on_replica & (set(during) - delivered_before)
    finally:
        target.stop()
    counts = target.delivered
    twice = {i: n for i, n in counts.items() if n > 1}
    print(
        f"\n{how} failover after {delivered_at_failover} deliveries: {len(counts)} events, "
        f"{len(twice)} delivered twice, {len(moved)} later marks on the promoted replica, "
        f"{errors:g} dedup errors waited out"
    )
    assert set(counts) == {*before, *during, sentinel}  # nothing lost
    assert twice == {}  # nothing duplicated
    assert delivered_at_failover < 700  # the failover happened during delivery
    assert dead == 0
    assert await read_topic(kafka_bootstrap, dlq, expect=0, within=1) == []
    assert moved


async def test_sentinel_follows_the_master_through_a_failover(
    sentinel: redis_servers.SentinelSet,
) -> None:
    config = DedupConfig(
        store="redis",
        redis_url=SecretStr(sentinel.url),
        redis_mode="sentinel",
        redis_sentinel_master=sentinel.name,
        redis_sentinel_password=SecretStr(redis_servers.SENTINEL_PASSWORD),
        key_prefix=_prefix(),
    )
    store = RedisDedupStore.from_config(config)
    try:
        await store.start()
        await asyncio.gather(*(store.mark(f"e{i}", SINK) for i in range(100)))
        await wait_until(lambda: _replicated(sentinel.master, sentinel.replica), 10, "replicated")
        sentinel.master.kill()

        async def promoted() -> bool:
            return "role:master" in sentinel.replica.cli("INFO", "replication")

        await wait_until(promoted, 30, "sentinel to promote the replica")
        started = time.monotonic()
        while True:  # the engine's retry, in short: wait out DedupUnavailable
            try:
                seen = await asyncio.gather(*(store.seen(f"e{i}", SINK) for i in range(200)))
                break
            except Exception:
                assert time.monotonic() - started < 30
                await asyncio.sleep(0.2)
        assert seen == [True] * 100 + [False] * 100
        await store.mark("after", SINK)
        assert "webhookgw" in sentinel.replica.cli("KEYS", "webhookgw:*")
    finally:
        await store.aclose()


def _tls_config(t: redis_servers.TlsRedis, **overrides: object) -> DedupConfig:
    values: dict[str, object] = {
        "store": "redis",
        "redis_url": t.url(),
        "redis_ca_file": str(t.ca),
        "redis_cert_file": str(t.client_cert),
        "redis_key_file": str(t.client_key),
        "key_prefix": _prefix(),
        **overrides,
    }
    return DedupConfig.model_validate(values)


async def test_tls_with_client_certificate_and_acl_user(tls_redis: redis_servers.TlsRedis) -> None:
    store = RedisDedupStore.from_config(_tls_config(tls_redis))
    try:
        await store.start()
        await store.mark("e1", SINK)
        assert await store.seen("e1", SINK)
        assert not await store.seen("e2", SINK)
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"redis_url": "wrong"}, "Redis refused the credentials"),
        ({"key_prefix": "other:"}, "may not run MGET and SET"),
        ({"redis_ca_file": None}, "the TLS handshake failed"),
        ({"redis_cert_file": None, "redis_key_file": None}, "the TLS handshake failed"),
    ],
    ids=["wrong-password", "outside-acl-keys", "untrusted-server", "no-client-certificate"],
)
async def test_refusals_are_configuration_errors_naming_the_key(
    tls_redis: redis_servers.TlsRedis, overrides: dict[str, object], expected: str
) -> None:
    if overrides.get("redis_url") == "wrong":
        overrides = {"redis_url": tls_redis.url(password="not-the-password")}
    store = RedisDedupStore.from_config(_tls_config(tls_redis, **overrides))
    try:
        with pytest.raises(ConfigError) as info:
            await store.start()
    finally:
        await store.aclose()
    message = str(info.value)
    assert message.startswith("consumers.dedup.")
    assert expected in message
    assert redis_servers.PASSWORD not in message
    assert "not-the-password" not in message


def test_consumer_with_refused_redis_credentials_exits_with_the_key(
    tls_redis: redis_servers.TlsRedis, kafka_bootstrap: str, tmp_path: Path
) -> None:
    wrong = tls_redis.url(password="not-the-password")
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "dedup": {
                "store": "redis",
                "redis_url": wrong,
                "redis_ca_file": str(tls_redis.ca),
                "redis_cert_file": str(tls_redis.client_cert),
                "redis_key_file": str(tls_redis.client_key),
            },
            "topics": ["webhooks.raw"],
            "sinks": {"out": {"type": "file", "path": str(tmp_path / "out.jsonl")}},
            "routes": [{"name": "all", "sinks": ["out"]}],
        },
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumers",
            "--log-format",
            "text",
            "run",
            "--config",
            str(config),
            "--admin-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    output = res.stdout + res.stderr
    assert res.returncode == 2, output
    assert "consumers.dedup.redis_url: Redis refused the credentials" in output
    assert "Traceback" not in output
    assert "not-the-password" not in output
