"""The webhook port's answers with the spool enabled (fake Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Ingress, IngressState, create_app
from gateway.metrics import IngressMetrics
from gateway.producer import ProduceError
from gateway.server import create_admin_app
from gateway.sources import build_sources
from gateway.spool import Spool
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.spool.support import ACK_TIMEOUT, SECRET, FakeKafka, SignedPort
from tests.gateway.support import (
    TEST_VERIFIERS,
    FakeProducer,
    config,
    metric,
)


def shop() -> dict[str, Any]:
    return {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET],
        "key": {"pointers": ["/id"]},
        "body_limit": 1024 * 1024,
    }


class Gateway(SignedPort):
    def __init__(self, app: Any, ingress: Ingress, spool: Spool, registry: CollectorRegistry):
        super().__init__(app)
        self.ingress = ingress
        self.spool = spool
        self.registry = registry


def produce_failures(gw: Gateway, reason: str) -> float:
    return metric(
        gw.registry, "webhookgw_ingress_produce_failures_total", source="shop", reason=reason
    )


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, **spool: Any
) -> AsyncIterator[tuple[Gateway, FakeProducer, FakeKafka]]:
    cfg = config([shop()], {"spool": {"enabled": True, "path": str(tmp_path), **spool}})
    registry = CollectorRegistry()
    metrics = IngressMetrics(registry)
    producer = FakeProducer(fail=ProduceError("timeout", "Kafka did not acknowledge"))
    kafka = FakeKafka(up=False)
    journal = await Spool.open(cfg.gateway.spool, metrics, kafka.enqueue, ACK_TIMEOUT)
    journal.start()
    sources = build_sources(cfg, VerifierRegistry(TEST_VERIFIERS))
    ingress = Ingress(sources, producer, metrics, cfg.gateway, IngressState(), spool=journal)
    gw = Gateway(create_app(ingress), ingress, journal, registry)
    try:
        yield gw, producer, kafka
    finally:
        await gw.client.aclose()
        await journal.stop(drain_within=0)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, FakeProducer, FakeKafka]]:
    async with running(tmp_path) as running_gateway:
        yield running_gateway


def body(n: int, size: int = 0) -> bytes:
    return b'{"id":"order-%d","n":%d,"pad":"%s"}' % (n % 2, n, b"x" * size)


async def test_unacknowledged_records_are_spooled_and_answered_202(
    gateway: tuple[Gateway, FakeProducer, FakeKafka],
) -> None:
    gw, producer, kafka = gateway
    first = await gw.post(body(0))
    assert first.status_code == 202
    # The spool is not empty: the next ones queue behind it, even with Kafka back.
    producer.fail = None
    rest = [await gw.post(body(n)) for n in range(1, 6)]
    assert [r.status_code for r in rest] == [202] * 5
    assert producer.records == []
    assert len(producer.deadlines) == 1
    kafka.set_up()
    assert await gw.spool.wait_drained(5)
    assert [r.value for r in kafka.written] == [body(n) for n in range(6)]
    assert [r.key for r in kafka.written] == [b"order-0", b"order-1"] * 3
    ids = [dict(r.headers)["ce_id"].decode() for r in kafka.written]
    assert ids == [first.json()["id"]] + [r.json()["id"] for r in rest]
    spooled = "webhookgw_ingress_spooled_total"
    assert metric(gw.registry, spooled, source="shop", reason="timeout") == 1
    assert metric(gw.registry, spooled, source="shop", reason="backlog") == 5
    # Drained: straight to Kafka again.
    assert (await gw.post(body(7))).status_code == 202
    assert [r.value for r in producer.records] == [body(7)]


async def test_full_journal_is_503(tmp_path: Path) -> None:
    async with running(tmp_path, max_bytes=1024 * 1024) as (gw, _, _):
        answers = [await gw.post(body(n, size=400_000)) for n in range(3)]
        assert [r.status_code for r in answers] == [202, 202, 503]
        problem = answers[2].json()
        assert answers[2].headers["content-type"] == "application/problem+json"
        assert answers[2].headers["retry-after"] == "1"
        assert "spool is full" in problem["detail"]
        assert (
            metric(
                gw.registry,
                "webhookgw_ingress_produce_failures_total",
                source="shop",
                reason="spool_full",
            )
            == 1
        )
        assert (
            metric(gw.registry, "webhookgw_ingress_requests_total", source="shop", status="503")
            == 1
        )


async def test_a_refusal_that_cannot_succeed_later_is_503_not_spooled(
    gateway: tuple[Gateway, FakeProducer, FakeKafka],
) -> None:
    gw, producer, _ = gateway
    producer.fail = ProduceError("error", "Kafka refused the record", retriable=False)
    r = await gw.post(body(1))
    assert r.status_code == 503
    assert gw.spool.records == 0
    reason = {"source": "shop", "reason": "error"}
    assert metric(gw.registry, "webhookgw_ingress_produce_failures_total", **reason) == 1


async def test_readyz_stays_ready_with_the_backlog_while_kafka_is_down(
    gateway: tuple[Gateway, FakeProducer, FakeKafka],
) -> None:
    gw, producer, _ = gateway
    assert (await gw.post(body(1))).status_code == 202
    producer.ready = "Kafka unreachable: KafkaConnectionError"
    admin = create_admin_app(gw.ingress.state, producer, CollectorRegistry(), gw.spool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin), base_url="http://admin"
    ) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["spool"]["records"] == 1
        assert r.json()["kafka"] == "Kafka unreachable: KafkaConnectionError"
        gw.ingress.state.shutting_down = True
        assert (await c.get("/readyz")).status_code == 503


async def test_readyz_is_503_when_topics_are_missing_even_with_a_spool(
    gateway: tuple[Gateway, FakeProducer, FakeKafka],
) -> None:
    """Missing topics are not an outage the spool can bridge: no drain could deliver."""
    gw, producer, _ = gateway
    producer.ready = "topics missing: webhooks.raw"
    admin = create_admin_app(gw.ingress.state, producer, CollectorRegistry(), gw.spool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin), base_url="http://admin"
    ) as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert "topics missing" in r.text
    # Not ready, the backlog is still reported: it is what an operator looks at next.
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["spool"]["records"] == 0


async def test_an_unknown_topic_is_503_even_while_records_queue_behind_the_spool(
    tmp_path: Path,
) -> None:
    """While the spool holds records, new ones are journaled behind them without going
    to the producer: the topic must still be one Kafka knows, or the 202 is a lie."""
    async with running(tmp_path) as (gw, producer, _):
        assert (await gw.post(body(1))).status_code == 202  # spooled: Kafka down
        assert gw.spool.active
        producer.unknown = {"webhooks.raw"}
        r = await gw.post(body(2))
        assert r.status_code == 503
        assert gw.spool.records == 1
        assert produce_failures(gw, "unknown_topic") == 1


async def test_an_unknown_topic_is_503_at_once_never_spooled(tmp_path: Path) -> None:
    async with running(tmp_path) as (gw, producer, _):
        producer.fail = ProduceError("unknown_topic", "topic does not exist", retriable=False)
        r = await gw.post(body(1))
        assert r.status_code == 503
        assert gw.spool.records == 0
        assert produce_failures(gw, "unknown_topic") == 1


async def test_readyz_is_503_when_the_spool_stalls_while_kafka_is_reachable(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, stall_seconds=0.2) as (gw, producer, _):
        assert (await gw.post(body(1))).status_code == 202  # spooled; FakeKafka is down
        admin = create_admin_app(gw.ingress.state, producer, CollectorRegistry(), gw.spool)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=admin), base_url="http://admin"
        ) as c:
            producer.ready = "Kafka unreachable: KafkaConnectionError"
            await asyncio.sleep(0.3)
            assert (await c.get("/readyz")).status_code == 200  # an outage: keep accepting
            producer.ready = None  # reachable, yet the head is not acknowledged
            r = await c.get("/readyz")
            assert r.status_code == 503
            assert "no progress" in r.text


def test_spool_is_off_by_default() -> None:
    cfg = config([shop()])
    assert cfg.gateway.spool.enabled is False
    assert cfg.gateway.spool.fsync is True
