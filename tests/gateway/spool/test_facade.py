"""The spool on the event loop: ordered draining exactly once, group commit off the
event loop, and a failed journal write."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from gateway.producer import ProduceError, Record
from gateway.spool.codec import encode
from gateway.spool.journal import (
    Journal,
    Position,
    list_segments,
    read_checkpoint,
    segment_path,
)
from tests.gateway.spool.support import ACK_TIMEOUT, FakeKafka, open_spool, rec
from tests.gateway.support import (
    metric,
)


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
    monkeypatch.setattr("gateway.spool.journal.os.fsync", fsync)
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
    monkeypatch.setattr("gateway.spool.journal.os.fsync", calls.append)
    try:
        await spool.append(rec(1), source="s", reason="timeout")
    finally:
        monkeypatch.undo()
        await spool.stop(drain_within=0)
    assert calls == []
    assert Journal.open(tmp_path, 1 << 20, False)[1].records == 1


async def test_a_failed_journal_write_is_503_and_the_journal_cut_back(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)
    await spool.append(rec(0), source="s", reason="timeout")
    (segment,) = list_segments(tmp_path)
    good = segment_path(tmp_path, segment).stat().st_size
    real_write = os.write

    def half_then_no_space(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gateway.spool.journal.os.write", half_then_no_space)
    try:
        with pytest.raises(ProduceError, match="No space left") as info:
            await spool.append(rec(1), source="s", reason="timeout")
        assert info.value.reason == "spool_error"
        assert spool.records == 1
    finally:
        monkeypatch.undo()
    for _ in range(100):  # refused (503) while the journal is being cut back
        if not spool.broken:
            break
        await asyncio.sleep(0.01)
    assert not spool.broken
    await spool.append(rec(2), source="s", reason="timeout")
    assert metric(registry, "webhookgw_ingress_spool_write_failures_total") == 1
    await spool.stop(drain_within=0)
    assert segment_path(tmp_path, segment).stat().st_size == good + len(encode(rec(2)))

    kafka = FakeKafka()
    spool = await open_spool(tmp_path, kafka, CollectorRegistry())
    try:
        assert spool.truncated_bytes == spool.skipped_bytes == 0
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(0), rec(2)]


async def test_records_queued_behind_a_failed_write_are_never_written_behind_it(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever was answered 202 survives a restart: a record that queued while a write
    was failing is written after the cut, not behind the torn frame."""
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)
    real_write = os.write
    gate = threading.Event()
    calls = 0

    def first_write_torn(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            gate.wait(5)
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("gateway.spool.journal.os.write", first_write_torn)
    try:
        first = asyncio.create_task(spool.append(rec(1, size=4000), source="s", reason="timeout"))
        await asyncio.sleep(0.05)  # its commit is now inside the blocked write
        second = asyncio.create_task(spool.append(rec(2), source="s", reason="timeout"))
        await asyncio.sleep(0.05)
        gate.set()
        with pytest.raises(ProduceError):
            await first
        await second  # acknowledged
    finally:
        gate.set()
        monkeypatch.undo()
    await spool.stop(drain_within=0)

    kafka = FakeKafka()
    spool = await open_spool(tmp_path, kafka, CollectorRegistry())
    try:
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(2)]


async def test_when_the_journal_cannot_be_cut_back_spooling_stays_off(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)

    def fails(*args: Any) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("gateway.spool.journal.os.write", fails)
    monkeypatch.setattr("gateway.spool.journal.os.ftruncate", fails)
    try:
        with pytest.raises(ProduceError, match="Input/output error"):
            await spool.append(rec(1), source="s", reason="timeout")
        for _ in range(20):
            if "cannot cut" in spool.status().get("error", ""):
                break
            await asyncio.sleep(0.01)
        assert spool.broken
        assert "cannot cut the journal back" in spool.status()["error"]
        monkeypatch.undo()
        with pytest.raises(ProduceError) as again:
            await spool.append(rec(2), source="s", reason="timeout")
        assert again.value.reason == "spool_error"
    finally:
        monkeypatch.undo()
        await spool.stop()


class RefusingKafka(FakeKafka):
    """Refuses the records whose value contains ``poison`` for good, as Kafka does a
    record too large for the topic."""

    async def enqueue(self, record: Record) -> asyncio.Future[Any]:
        if b"poison" in record.value:
            self.enqueued += 1
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(MessageSizeTooLargeError())
            return future
        return await super().enqueue(record)


async def test_a_record_kafka_refuses_for_good_is_set_aside_not_retried_forever(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    kafka = RefusingKafka(up=False)
    spool = await open_spool(tmp_path, kafka, registry)
    poison = Record("webhooks.raw", b"k", b'{"poison":1}', [("ce_id", b"p")])
    try:
        await spool.append(rec(1), source="s", reason="timeout")
        await spool.append(poison, source="s", reason="timeout")
        await spool.append(rec(2), source="s", reason="timeout")
        kafka.set_up()
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(1), rec(2)]
    assert metric(registry, "webhookgw_ingress_spool_rejected_total") == 1
    kept = (tmp_path / "rejected").read_bytes()
    assert kept == encode(poison)
    assert stat.S_IMODE((tmp_path / "rejected").stat().st_mode) == 0o600


async def test_a_record_that_cannot_be_set_aside_stays_at_the_head_until_it_can(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """The `rejected` file cannot be written (here a directory stands in its place, as
    a full disk refuses it): the record is not dropped, and the journal keeps it (and
    what follows it) until it is set aside; a follower Kafka already has is not sent
    twice."""
    kafka = RefusingKafka(up=False)
    spool = await open_spool(tmp_path, kafka, registry)
    poison = Record("webhooks.raw", b"k", b'{"poison":1}', [("ce_id", b"p")])
    blocker = tmp_path / "rejected"
    blocker.mkdir()
    try:
        await spool.append(poison, source="s", reason="timeout")
        await spool.append(rec(2), source="s", reason="timeout")
        kafka.set_up()
        assert not await spool.wait_drained(0.5)
        assert spool.records == 2
        assert not (tmp_path / "rejected").is_file()
        assert "cannot write the rejected file" in (spool.last_error or "")
        blocker.rmdir()
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(2)]
    assert (tmp_path / "rejected").read_bytes() == encode(poison)
    assert metric(registry, "webhookgw_ingress_spool_rejected_total") == 1
