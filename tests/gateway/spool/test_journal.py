"""The journal on disk: files, segments, permissions, the directory lock, crash recovery
and the checkpoint."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.spool import SpoolOpenError
from gateway.spool.codec import encode
from gateway.spool.journal import (
    MAGIC,
    Journal,
    list_segments,
    read_checkpoint,
    segment_path,
)
from tests.gateway.spool.support import FakeKafka, open_spool, rec
from tests.gateway.support import (
    metric,
)


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


@pytest.mark.parametrize("where", ["header", "payload", "torn-in-the-middle"])
async def test_a_bad_frame_between_good_ones_is_skipped_and_the_rest_kept(
    tmp_path: Path, registry: CollectorRegistry, where: str
) -> None:
    spool = await open_spool(tmp_path, FakeKafka(up=False), registry)
    for n in range(3):
        await spool.append(rec(n), source="s", reason="timeout")
    await spool.stop(drain_within=0)
    (segment,) = list_segments(tmp_path)
    path = segment_path(tmp_path, segment)
    frame = encode(rec(3))
    if where == "header":
        bad = bytes([frame[0] ^ 0x7F]) + frame[1:]
    elif where == "payload":
        bad = frame[:20] + bytes([frame[20] ^ 0xFF]) + frame[21:]
    else:  # what a failed append leaves when later ones are written behind it
        bad = frame[: len(frame) // 2]
    later = [encode(rec(n)) for n in range(4, 7)]
    with path.open("ab") as f:
        f.write(bad + b"".join(later))

    kafka = FakeKafka()
    registry2 = CollectorRegistry()
    spool = await open_spool(tmp_path, kafka, registry2)
    try:
        assert spool.skipped_bytes == len(bad)
        assert spool.truncated_bytes == 0
        assert spool.recovered_records == 6
        assert metric(registry2, "webhookgw_ingress_spool_skipped_bytes_total") == len(bad)
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(n) for n in (0, 1, 2, 4, 5, 6)]


async def test_skipping_keeps_the_checkpoint_valid(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """Bytes before the checkpoint stay where they are, so its offset still points at a
    frame boundary after the damaged segment is rewritten."""
    kafka = FakeKafka()
    spool = await open_spool(tmp_path, kafka, registry)
    for n in range(3):
        await spool.append(rec(n), source="s", reason="timeout")
    assert await spool.wait_drained(5)
    await spool.stop()
    (segment,) = list_segments(tmp_path)
    path = segment_path(tmp_path, segment)
    with path.open("ab") as f:
        f.write(encode(rec(3))[:9] + encode(rec(4)))

    kafka = FakeKafka()
    spool = await open_spool(tmp_path, kafka, CollectorRegistry())
    try:
        assert spool.recovered_records == 1
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(4)]


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
