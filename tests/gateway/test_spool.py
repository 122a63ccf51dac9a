"""The durable spool: journal format, crash recovery, ordered draining, group commit,
and the webhook port's answers with the spool enabled (fake Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import struct
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Ingress, IngressState, create_app
from gateway.config import SpoolSettings
from gateway.metrics import IngressMetrics
from gateway.producer import ProduceError, Record
from gateway.server import create_admin_app
from gateway.sources import build_sources
from gateway.spool import (
    FRAME,
    MAGIC,
    Journal,
    Position,
    Spool,
    SpoolOpenError,
    decode,
    encode,
    list_segments,
    read_checkpoint,
    segment_path,
)
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.support import (
    SIG_HEADER,
    TEST_VERIFIERS,
    FakeProducer,
    config,
    metric,
    sign,
)

SECRET = "spool-secret-0123456789"
ACK_TIMEOUT = 0.05


def rec(n: int, key: str | None = None, size: int = 0) -> Record:
    value = f'{{"n":{n}}}'.encode() + b" " * size
    return Record("webhooks.raw", (key or f"k{n % 3}").encode(), value, [("ce_id", b"id-%d" % n)])


class FakeKafka:
    """The producer's ``enqueue``: while down, futures stay unresolved (as aiokafka
    keeps retrying); when up, they resolve in order and the records count as written."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.written: list[Record] = []
        self.enqueued = 0
        self._waiting: list[tuple[Record, asyncio.Future[Any]]] = []

    async def enqueue(self, record: Record) -> asyncio.Future[Any]:
        self.enqueued += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, future))
        if self.up:
            self._resolve()
        return future

    def set_up(self) -> None:
        self.up = True
        self._resolve()

    def _resolve(self) -> None:
        for record, future in self._waiting:
            if not future.done():
                self.written.append(record)
                future.set_result(None)
        self._waiting = []


def settings(path: Path, **overrides: Any) -> SpoolSettings:
    values: dict[str, Any] = {"enabled": True, "path": path, "retry_seconds": 0.01}
    values.update(overrides)
    return SpoolSettings(**values)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def open_spool(
    path: Path, kafka: FakeKafka, registry: CollectorRegistry, **overrides: Any
) -> Spool:
    spool = await Spool.open(
        settings(path, **overrides), IngressMetrics(registry), kafka.enqueue, ACK_TIMEOUT
    )
    spool.start()
    return spool


# --- format ---------------------------------------------------------------------------


def test_frame_is_length_crc_payload_and_round_trips() -> None:
    record = Record("t.x", b"\x00key", b"\xff\xfebody", [("ce_id", b"1"), ("h", b"")])
    frame = encode(record)
    length, crc = FRAME.unpack(frame[: FRAME.size])
    payload = frame[FRAME.size :]
    assert length == len(payload)
    assert crc == zlib.crc32(payload)
    assert payload[:5] == struct.pack(">H", 3) + b"t.x"
    assert decode(payload) == record
    with pytest.raises(ValueError, match="inside a field"):
        decode(payload[:-1])
    with pytest.raises(ValueError, match="after the last header"):
        decode(payload + b"x")


async def test_journal_files_segments_and_permissions(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    path = tmp_path / "spool"
    spool = await open_spool(path, FakeKafka(up=False), registry, segment_bytes=64 * 1024)
    records = [rec(n, size=20_000) for n in range(7)]
    for r in records:
        await spool.append(r, source="s", reason="timeout")
    segments = list_segments(path)
    assert len(segments) > 1  # rolled over at segment_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for n in segments:
        p = segment_path(path, n)
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.read_bytes()[: len(MAGIC)] == MAGIC
    assert spool.records == 7
    assert metric(registry, "webhookgw_ingress_spool_backlog_records") == 7
    assert metric(registry, "webhookgw_ingress_spooled_total", source="s", reason="timeout") == 7
    # Everything written is read back in order, across segments.
    await spool.stop(drain_within=0)
    journal, recovery = Journal.open(path, 64 * 1024, True)
    try:
        entries, _ = journal.read(recovery.read, recovery.end, 100)
    finally:
        journal.close()
    assert [e.record for e in entries] == records
    assert recovery.records == 7


async def test_a_second_process_cannot_use_the_same_directory(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(), registry)
    try:
        with pytest.raises(SpoolOpenError, match="in use by another gateway process"):
            Journal.open(tmp_path, 1 << 20, True)
    finally:
        await spool.stop()
    Journal.open(tmp_path, 1 << 20, True)[0].close()  # released on stop


# --- crash recovery -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["torn", "bad-crc", "torn-header"])
async def test_torn_last_record_is_cut_and_the_rest_drained(
    tmp_path: Path, registry: CollectorRegistry, damage: str
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)
    for n in range(5):
        await spool.append(rec(n), source="s", reason="timeout")
    await spool.stop(drain_within=0)  # as after a crash: nothing drained
    (segment,) = list_segments(tmp_path)
    path = segment_path(tmp_path, segment)
    good = path.stat().st_size
    frame = encode(rec(99))
    if damage == "torn":
        tail = frame[: len(frame) - 3]
    elif damage == "bad-crc":
        tail = frame[:-1] + bytes([frame[-1] ^ 0xFF])
    else:
        tail = frame[:5]
    with path.open("ab") as f:
        f.write(tail)

    kafka = FakeKafka()
    spool = await open_spool(tmp_path, kafka, CollectorRegistry())
    try:
        assert spool.truncated_bytes == len(tail)
        assert path.stat().st_size == good
        assert spool.recovered_records == 5
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(n) for n in range(5)]


async def test_restart_resumes_after_the_checkpoint(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    kafka = FakeKafka()
    spool = await open_spool(tmp_path, kafka, registry, segment_bytes=64 * 1024)
    for n in range(6):
        await spool.append(rec(n, size=15_000), source="s", reason="timeout")
    assert await spool.wait_drained(5)
    kafka.up = False
    for n in range(6, 10):
        await spool.append(rec(n, size=15_000), source="s", reason="backlog")
    await spool.stop(drain_within=0)
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint is not None
    assert min(list_segments(tmp_path)) == checkpoint.segment  # drained segments deleted

    again = FakeKafka()
    spool = await open_spool(tmp_path, again, CollectorRegistry())
    try:
        assert spool.recovered_records == 4
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(n, size=15_000) for n in range(6)]
    assert again.written == [rec(n, size=15_000) for n in range(6, 10)]


async def test_a_corrupt_checkpoint_resends_rather_than_loses(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    kafka = FakeKafka(up=False)
    spool = await open_spool(tmp_path, kafka, registry)
    for n in range(3):
        await spool.append(rec(n), source="s", reason="timeout")
    await spool.stop(drain_within=0)
    (tmp_path / "checkpoint").write_bytes(b"garbage-garbage-garbage-")
    assert read_checkpoint(tmp_path) is None
    again = FakeKafka()
    spool = await open_spool(tmp_path, again, CollectorRegistry())
    try:
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert again.written == [rec(n) for n in range(3)]


# --- draining -------------------------------------------------------------------------


async def test_drains_in_acceptance_order_exactly_once_when_kafka_returns(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    kafka = FakeKafka(up=False)
    spool = await open_spool(tmp_path, kafka, registry, drain_batch=7, segment_bytes=64 * 1024)
    records = [rec(n, size=3000) for n in range(60)]
    try:
        for r in records:
            await spool.append(r, source="s", reason="backlog")
        await asyncio.sleep(ACK_TIMEOUT * 3)  # the drainer times out against "down" Kafka
        assert kafka.written == []
        assert spool.active
        kafka.set_up()
        assert await spool.wait_drained(10)
    finally:
        await spool.stop()
    # Copies handed over while Kafka was down were acknowledged when it returned and
    # were not sent a second time.
    assert kafka.written == records
    assert metric(registry, "webhookgw_ingress_spool_drained_total") == 60
    assert metric(registry, "webhookgw_ingress_spool_backlog_bytes") == 0
    assert len(list_segments(tmp_path)) == 1  # drained segments deleted
    assert read_checkpoint(tmp_path) == Position(
        list_segments(tmp_path)[0],
        segment_path(tmp_path, list_segments(tmp_path)[0]).stat().st_size,
    )


async def test_an_earlier_attempt_kafka_acknowledges_late_is_not_sent_again(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    kafka = FakeKafka()
    late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    spool = await open_spool(tmp_path, kafka, registry)
    try:
        await spool.append(rec(0), source="s", reason="timeout", pending=late)
        await spool.append(rec(1), source="s", reason="backlog")
        await spool.append(rec(2), source="s", reason="timeout", pending=failed)
        await asyncio.sleep(ACK_TIMEOUT * 3)
        assert kafka.written == []  # rec(1) waits behind rec(0)'s first copy
        late.set_result(None)  # the producer's own copy of rec(0) landed
        failed.set_exception(ProduceError("error", "refused"))
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(1), rec(2)]


async def test_group_commit_shares_fsyncs_off_the_event_loop(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        real_fsync(fd)

    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)
    monkeypatch.setattr("gateway.spool.os.fsync", fsync)
    try:
        await asyncio.gather(
            *(spool.append(rec(n), source="s", reason="timeout") for n in range(200))
        )
    finally:
        monkeypatch.undo()
        await spool.stop(drain_within=0)
    commits = metric(registry, "webhookgw_ingress_spool_fsync_duration_seconds_count")
    assert 1 <= commits < 200
    assert 1 <= len(threads) < 200
    assert threading.get_ident() not in threads


async def test_fsync_off_writes_without_fsync(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry, fsync=False)
    monkeypatch.setattr("gateway.spool.os.fsync", calls.append)
    try:
        await spool.append(rec(1), source="s", reason="timeout")
    finally:
        monkeypatch.undo()
        await spool.stop(drain_within=0)
    assert calls == []
    assert Journal.open(tmp_path, 1 << 20, False)[1].records == 1


async def test_a_failed_journal_write_is_503_and_turns_spooling_off(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)

    def no_space(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gateway.spool.os.write", no_space)
    try:
        with pytest.raises(ProduceError, match="No space left") as info:
            await spool.append(rec(1), source="s", reason="timeout")
        assert info.value.reason == "spool_error"
        assert spool.broken
        assert spool.records == 0
        with pytest.raises(ProduceError) as again:
            await spool.append(rec(2), source="s", reason="timeout")
        assert again.value.reason == "spool_error"
    finally:
        monkeypatch.undo()
        await spool.stop()


# --- through the webhook port ---------------------------------------------------------


def shop() -> dict[str, Any]:
    return {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET],
        "key": {"pointers": ["/id"]},
        "body_limit": 1024 * 1024,
    }


class Gateway:
    def __init__(self, app: Any, ingress: Ingress, spool: Spool, registry: CollectorRegistry):
        self.app = app
        self.ingress = ingress
        self.spool = spool
        self.registry = registry
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
        )

    async def post(self, body: bytes) -> httpx.Response:
        return await self.client.post(
            "/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)}
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


def test_spool_is_off_by_default() -> None:
    cfg = config([shop()])
    assert cfg.gateway.spool.enabled is False
    assert cfg.gateway.spool.fsync is True
