"""The spool with ``serve --workers N``: one journal per worker, and nothing acknowledged
stranded when N changes between runs (orphan journals are adopted)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import IngressMetrics
from gateway.producer import Record
from gateway.spool import Journal, Spool, SpoolOpenError, list_segments, worker_dirs
from tests.gateway.spool.support import ACK_TIMEOUT, FakeKafka, rec, settings


async def open_worker(root: Path, index: int, count: int, kafka: FakeKafka) -> Spool:
    own, orphans = worker_dirs(root, index, count)
    spool = await Spool.open(
        settings(root),
        IngressMetrics(CollectorRegistry()),
        kafka.enqueue,
        ACK_TIMEOUT,
        directory=own,
        adopt=orphans,
    )
    spool.start()
    return spool


async def leave_undrained(root: Path, index: int, count: int, records: Sequence[Record]) -> None:
    """A run of ``count`` processes whose worker ``index`` accepted ``records`` while
    Kafka was down and stopped before it came back."""
    spool = await open_worker(root, index, count, FakeKafka(up=False))
    for r in records:
        await spool.append(r, source="s", reason="timeout")
    await spool.stop(drain_within=0)
    assert spool.records == len(records)


def subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def test_worker_dirs_give_each_orphan_exactly_one_adopter(tmp_path: Path) -> None:
    for j in range(5):
        (tmp_path / f"worker-{j}").mkdir()
    (tmp_path / "worker-x").mkdir()  # not ours
    (tmp_path / "worker-9").write_text("")  # a file, not a journal directory
    w = [tmp_path / f"worker-{j}" for j in range(5)]

    assert worker_dirs(tmp_path, 0, 1) == (tmp_path, w)
    assert worker_dirs(tmp_path, 0, 2) == (w[0], [tmp_path, w[2], w[4]])
    assert worker_dirs(tmp_path, 1, 2) == (w[1], [w[3]])
    assert worker_dirs(tmp_path, 0, 3) == (w[0], [tmp_path, w[3]])
    assert worker_dirs(tmp_path, 1, 3) == (w[1], [w[4]])
    assert worker_dirs(tmp_path, 2, 3) == (w[2], [])
    assert worker_dirs(tmp_path, 4, 5) == (w[4], [])
    # Over any N, every directory is either someone's own or adopted by exactly one.
    for count in range(1, 7):
        claims: list[Path] = []
        for i in range(count):
            own, orphans = worker_dirs(tmp_path, i, count)
            claims += [own, *orphans]
        assert sorted(claims) == sorted({*claims, tmp_path, *w}), count
    assert worker_dirs(tmp_path / "missing", 1, 2) == (tmp_path / "missing" / "worker-1", [])


async def test_shrinking_to_one_process_drains_every_worker_journal(tmp_path: Path) -> None:
    first, second = [rec(n) for n in range(3)], [rec(n) for n in range(3, 6)]
    await leave_undrained(tmp_path, 0, 2, first)
    await leave_undrained(tmp_path, 1, 2, second)

    kafka = FakeKafka()
    spool = await open_worker(tmp_path, 0, 1, kafka)
    try:
        assert spool.recovered_records == 6
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    # Each orphan's records in their order, behind each other.
    assert kafka.written == first + second
    assert not (tmp_path / "worker-0").exists()
    assert not (tmp_path / "worker-1").exists()


async def test_growing_from_one_process_worker_0_drains_the_single_journal(
    tmp_path: Path,
) -> None:
    old = [rec(n) for n in range(4)]
    await leave_undrained(tmp_path, 0, 1, old)
    assert list_segments(tmp_path)

    kafkas = [FakeKafka() for _ in range(3)]
    spools = [await open_worker(tmp_path, i, 3, kafkas[i]) for i in range(3)]
    try:
        assert [s.recovered_records for s in spools] == [4, 0, 0]
        assert await spools[0].wait_drained(5)
    finally:
        for s in spools:
            await s.stop()
    assert kafkas[0].written == old
    assert kafkas[1].written == kafkas[2].written == []
    assert list_segments(tmp_path) == []  # the single journal is empty and gone
    assert subdirs(tmp_path) == [
        "worker-0",
        "worker-1",
        "worker-2",
    ]


async def test_shrinking_keeps_own_records_first_then_the_adopted_ones(tmp_path: Path) -> None:
    own = [rec(n) for n in range(2)]
    adopted = [rec(n) for n in range(10, 13)]
    await leave_undrained(tmp_path, 1, 4, own)
    await leave_undrained(tmp_path, 3, 4, adopted)
    await leave_undrained(tmp_path, 2, 4, [rec(20)])  # worker 0's orphan, not worker 1's

    kafka = FakeKafka()
    spool = await open_worker(tmp_path, 1, 2, kafka)
    try:
        assert spool.recovered_records == 5
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == own + adopted
    assert not (tmp_path / "worker-3").exists()
    assert (tmp_path / "worker-2").exists()  # left to worker 0


async def test_an_orphan_another_process_holds_is_a_clear_error(tmp_path: Path) -> None:
    await leave_undrained(tmp_path, 3, 4, [rec(1)])
    holder, _ = Journal.open(tmp_path / "worker-3", 1 << 20, True)
    try:
        with pytest.raises(SpoolOpenError, match=r"worker-3.*in use by another gateway process"):
            await open_worker(tmp_path, 1, 2, FakeKafka())
    finally:
        holder.close()
    # Its own directory was released again: the next attempt works.
    kafka = FakeKafka()
    spool = await open_worker(tmp_path, 1, 2, kafka)
    try:
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    assert kafka.written == [rec(1)]


async def test_a_crash_while_adopting_duplicates_rather_than_loses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [rec(n) for n in range(3)]
    await leave_undrained(tmp_path, 2, 3, records)

    def crash(self: Journal, pos: object) -> None:
        raise OSError("simulated crash before the orphan is marked drained")

    with monkeypatch.context() as m:
        m.setattr(Journal, "checkpoint", crash)
        with pytest.raises(OSError, match="simulated crash"):
            await open_worker(tmp_path, 0, 2, FakeKafka())

    kafka = FakeKafka()
    spool = await open_worker(tmp_path, 0, 2, kafka)
    try:
        assert await spool.wait_drained(5)
    finally:
        await spool.stop()
    # The copy made before the crash and the orphan itself: every record at least once.
    assert kafka.written == records + records
