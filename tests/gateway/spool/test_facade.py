"""The spool on the event loop: ordered draining exactly once, group commit off the
event loop, and a failed journal write."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.producer import ProduceError
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


async def test_a_failed_journal_write_is_503_and_turns_spooling_off(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)

    def no_space(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gateway.spool.journal.os.write", no_space)
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
