from __future__ import annotations

import pytest

from consumers.offsets import PartitionOffsets


def test_nothing_fetched_has_no_commit_point() -> None:
    assert PartitionOffsets().commit_point() is None


def test_commit_point_is_lowest_unfinished_offset() -> None:
    t = PartitionOffsets()
    for off in (10, 11, 12, 13):
        t.add(off)
    assert t.commit_point() == 10
    t.finish(12)
    t.finish(11)
    assert t.commit_point() == 10  # 10 still runs: a crash must re-read it
    assert t.in_flight == 2
    t.finish(10)
    assert t.commit_point() == 13
    t.finish(13)
    assert t.commit_point() == 14
    assert t.in_flight == 0


def test_gaps_in_offsets_commit_past_the_last_seen() -> None:
    t = PartitionOffsets()
    t.add(5)
    t.add(9)  # 6-8 were compacted away or are transaction markers
    t.finish(9)
    assert t.commit_point() == 5
    t.finish(5)
    assert t.commit_point() == 10


def test_to_commit_only_when_ahead_of_committed() -> None:
    t = PartitionOffsets()
    t.add(0)
    t.finish(0)
    assert t.to_commit() == 1
    t.committed = 1
    assert t.to_commit() is None
    t.add(1)
    assert t.to_commit() is None  # 1 is unfinished: nothing new to commit
    t.finish(1)
    assert t.to_commit() == 2


def test_out_of_order_add_and_unknown_finish_are_rejected() -> None:
    t = PartitionOffsets()
    t.add(3)
    with pytest.raises(ValueError, match="out of order"):
        t.add(3)
    with pytest.raises(ValueError, match="not pending"):
        t.finish(7)


def test_the_oldest_timestamp_is_the_lowest_unfinished_records() -> None:
    t = PartitionOffsets()
    assert t.oldest_timestamp_ms() is None
    t.add(0, 1000)
    t.add(1, 2000)
    t.add(2, -1)
    assert t.oldest_timestamp_ms() == 1000
    t.finish(1)  # out of order: 0 is still the oldest unfinished
    assert t.oldest_timestamp_ms() == 1000
    t.finish(0)
    assert t.oldest_timestamp_ms() is None  # 2 is unfinished, its timestamp unknown
    t.finish(2)
    assert t.oldest_timestamp_ms() is None
