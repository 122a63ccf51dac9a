"""The spool on a real filesystem that fills up under load: every record the spool
acknowledged is there after a restart, none twice, whatever failed on the way.

A size-limited tmpfs is mounted for the test (root only); writes then fail with ENOSPC
at whatever point the kernel decides: mid-frame, while creating a segment, on fsync.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.producer import ProduceError, Record
from tests.gateway.spool.support import FakeKafka, open_spool
from tests.gateway.support import metric
from tests.services import unavailable

FS_BYTES = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable("a size-limited tmpfs", done.stderr.strip() or "mount failed (not root?)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def record(n: int, size: int) -> Record:
    value = b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)
    return Record("webhooks.raw", b"k%d" % (n % 7), value, [("ce_id", b"id-%d" % n)])


async def test_no_acknowledged_record_is_lost_when_the_disk_fills(small_fs: Path) -> None:
    registry = CollectorRegistry()
    spool = await open_spool(small_fs / "spool", FakeKafka(up=False), registry, segment_bytes=65536)
    rng = random.Random(7)
    sizes = [rng.choice((200, 2_000, 9_000, 30_000)) for _ in range(600)]
    acked: list[int] = []
    refused: list[int] = []

    async def client(numbers: list[int]) -> None:
        for n in numbers:
            try:
                await spool.append(record(n, sizes[n]), source="s", reason="timeout")
            except ProduceError:
                refused.append(n)
                await asyncio.sleep(0.001)
            else:
                acked.append(n)

    numbers = list(range(len(sizes)))
    await asyncio.gather(*(client(numbers[i::8]) for i in range(8)))
    failures = metric(registry, "webhookgw_ingress_spool_write_failures_total")
    await spool.stop(drain_within=0)
    # max_bytes is far above the filesystem: every refusal is a failed write.
    assert refused, "the filesystem never filled: the test proves nothing"
    assert acked

    kafka = FakeKafka()
    spool = await open_spool(small_fs / "spool", kafka, CollectorRegistry())
    try:
        assert await spool.wait_drained(10)
    finally:
        await spool.stop()
    written = [int(r.headers[0][1].removeprefix(b"id-")) for r in kafka.written]
    assert len(written) == len(set(written)), "a record was drained twice"
    missing = sorted(set(acked) - set(written))
    assert missing == [], f"{len(missing)} acknowledged record(s) lost"
    assert set(written) <= set(acked), "a refused (503) record was drained"
    assert spool.skipped_bytes == 0
    assert failures > 0
