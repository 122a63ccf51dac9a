"""Per-key order with the spool enabled while an earlier record of the key is still in
its acknowledgement wait (fake producer and fake Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import Ingress, IngressState, create_app
from gateway.metrics import IngressMetrics
from gateway.producer import Headers, ProduceError, Record
from gateway.sources import build_sources
from gateway.spool import Spool
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.spool.support import ACK_TIMEOUT, SECRET, FakeKafka, SignedPort, open_spool, rec
from tests.gateway.support import TEST_VERIFIERS, config, metric

SPOOLED = "webhookgw_ingress_spooled_total"


@dataclass
class HeldProducer:
    """The direct path of the request handler. A body listed in ``hold`` waits until
    the test releases it, then times out with its delivery still pending (as aiokafka
    keeps a record after the deadline); any other body is acknowledged at once and
    lands in the same fake Kafka the drainer writes to."""

    kafka: FakeKafka
    hold: dict[bytes, asyncio.Event] = field(default_factory=dict)
    waiting: dict[bytes, asyncio.Event] = field(default_factory=dict)
    pending: dict[bytes, asyncio.Future[Any]] = field(default_factory=dict)

    def held(self, value: bytes) -> None:
        self.hold[value] = asyncio.Event()
        self.waiting[value] = asyncio.Event()
        self.pending[value] = asyncio.get_running_loop().create_future()

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        release = self.hold.get(value)
        if release is None:
            self.kafka.written.append(Record(topic, key, value, headers))
            return
        self.waiting[value].set()
        await release.wait()
        raise ProduceError("timeout", "Kafka did not acknowledge", pending=self.pending[value])

    async def readiness(self) -> str | None:
        return None

    def topic_known(self, topic: str) -> bool:
        return True


class Port(SignedPort):
    def __init__(self, app: Any, spool: Spool, registry: CollectorRegistry) -> None:
        super().__init__(app)
        self.spool = spool
        self.registry = registry


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Port, HeldProducer, FakeKafka]]:
    shop = {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET],
        "key": {"pointers": ["/id"]},
    }
    cfg = config([shop], {"spool": {"enabled": True, "path": str(tmp_path)}})
    registry = CollectorRegistry()
    metrics = IngressMetrics(registry)
    kafka = FakeKafka()
    producer = HeldProducer(kafka)
    spool = await Spool.open(cfg.gateway.spool, metrics, kafka.enqueue, ACK_TIMEOUT)
    spool.start()
    sources = build_sources(cfg, VerifierRegistry(TEST_VERIFIERS))
    ingress = Ingress(sources, producer, metrics, cfg.gateway, IngressState(), spool=spool)
    port = Port(create_app(ingress), spool, registry)
    try:
        yield port, producer, kafka
    finally:
        await port.client.aclose()
        await spool.stop(drain_within=0)


def order(key: str, n: int) -> bytes:
    return b'{"id":"%s","n":%d}' % (key.encode(), n)


async def test_a_record_sent_during_its_predecessors_ack_wait_does_not_overtake_it(
    tmp_path: Path,
) -> None:
    first, second = order("order-1", 1), order("order-1", 2)
    async with running(tmp_path) as (port, producer, kafka):
        producer.held(first)
        answer_first = asyncio.create_task(port.post(first))
        await producer.waiting[first].wait()
        answer_second = asyncio.create_task(port.post(second))
        await asyncio.sleep(ACK_TIMEOUT)  # time enough to overtake, were it allowed
        producer.hold[first].set()  # first: deadline passed, journaled with its attempt
        answers = await asyncio.gather(answer_first, answer_second)
        assert [a.status_code for a in answers] == [202, 202]
        # The first attempt's batch expires after the second record was accepted.
        producer.pending[first].set_exception(ProduceError("error", "batch expired"))
        assert await port.spool.wait_drained(5)
        assert [r.value for r in kafka.written] == [first, second]
        assert metric(port.registry, SPOOLED, source="shop", reason="timeout") == 1
        assert metric(port.registry, SPOOLED, source="shop", reason="backlog") == 1


async def test_after_an_acknowledged_predecessor_the_next_record_goes_direct(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as (port, _, kafka):
        answers = await asyncio.gather(*(port.post(order("order-1", n)) for n in range(20)))
        assert [a.status_code for a in answers] == [202] * 20
        assert [r.value for r in kafka.written] == [order("order-1", n) for n in range(20)]
        assert metric(port.registry, SPOOLED, source="shop", reason="backlog") == 0
        assert port.spool.undecided_keys == 0  # nothing kept once every record is decided


async def test_a_record_of_another_key_is_not_delayed(tmp_path: Path) -> None:
    held, other = order("order-1", 1), order("order-2", 2)
    async with running(tmp_path) as (port, producer, kafka):
        producer.held(held)
        answer_held = asyncio.create_task(port.post(held))
        await producer.waiting[held].wait()
        answer_other = await port.post(other)
        assert answer_other.status_code == 202
        assert [r.value for r in kafka.written] == [other]
        assert not answer_held.done()  # still in its ack wait while the other went through
        producer.hold[held].set()
        producer.pending[held].set_result(None)
        assert (await answer_held).status_code == 202
        assert await port.spool.wait_drained(5)
        # Its first attempt was acknowledged: the journaled copy is not sent again.
        assert [r.value for r in kafka.written] == [other]


async def test_a_record_cancelled_while_waiting_still_holds_back_the_next(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    kafka = FakeKafka()
    producer = HeldProducer(kafka)
    spool = await open_spool(tmp_path, kafka, registry)
    first, second, third = (rec(n, key="k") for n in (1, 2, 3))
    producer.held(first.value)
    try:
        accept_first = asyncio.create_task(spool.accept(first, producer, 1.0, source="s"))
        await producer.waiting[first.value].wait()
        accept_second = asyncio.create_task(spool.accept(second, producer, 1.0, source="s"))
        await asyncio.sleep(0)
        accept_second.cancel()  # its request went away while it waited for the first
        accept_third = asyncio.create_task(spool.accept(third, producer, 1.0, source="s"))
        await asyncio.sleep(ACK_TIMEOUT)
        assert kafka.written == []
        assert not accept_third.done()
        producer.hold[first.value].set()
        await accept_first
        await accept_third
        producer.pending[first.value].set_exception(ProduceError("error", "batch expired"))
        assert await spool.wait_drained(5)
    finally:
        await spool.stop(drain_within=0)
    assert kafka.written == [first, third]
    assert accept_second.cancelled()
    assert spool.undecided_keys == 0
