"""The records the spool set aside: appended durably, taken once, sent again."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.producer import Headers, ProduceError, Record
from gateway.spool.adoption import journal_dirs
from gateway.spool.codec import encode
from gateway.spool.rejected import (
    REJECTED,
    TAKEN_PREFIX,
    append_rejected,
    read_rejected,
    resend,
    take_rejected,
)
from tests.gateway.spool.support import rec


class Kafka:
    """A producer's ``send``: records for ``missing`` topics are refused for good."""

    def __init__(self, missing: set[str] | None = None) -> None:
        self.missing = missing or set()
        self.sent: list[Record] = []

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        if topic in self.missing:
            raise ProduceError("unknown_topic", f"no topic {topic}", retriable=False)
        self.sent.append(Record(topic, key, value, headers))

    async def readiness(self) -> str | None:
        return None

    def topic_known(self, topic: str) -> bool:
        return topic not in self.missing


def files(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(directory.rglob(pattern))


def test_appended_records_are_read_back_in_order(tmp_path: Path) -> None:
    append_rejected(tmp_path / REJECTED, [rec(1), rec(2)])
    append_rejected(tmp_path / REJECTED, [rec(3)])
    assert read_rejected(tmp_path / REJECTED).records == [rec(1), rec(2), rec(3)]
    assert (tmp_path / REJECTED).stat().st_mode & 0o777 == 0o600


def test_a_torn_append_is_counted_and_the_frames_before_it_kept(tmp_path: Path) -> None:
    path = tmp_path / REJECTED
    append_rejected(path, [rec(1)])
    with path.open("ab") as f:
        f.write(encode(rec(2))[:-3])
    taken = read_rejected(path)
    assert taken.records == [rec(1)]
    assert taken.unreadable_bytes == len(encode(rec(2))) - 3


def test_an_append_after_the_file_was_taken_goes_to_a_new_file(tmp_path: Path) -> None:
    append_rejected(tmp_path / REJECTED, [rec(1)])
    [taken] = take_rejected(tmp_path)
    append_rejected(tmp_path / REJECTED, [rec(2)])
    assert taken.records == [rec(1)]
    assert read_rejected(taken.path).records == [rec(1)]  # nothing written behind the take
    assert read_rejected(tmp_path / REJECTED).records == [rec(2)]


async def test_resend_produces_everything_in_order_and_removes_the_files(tmp_path: Path) -> None:
    worker = tmp_path / "worker-1"
    worker.mkdir()
    append_rejected(tmp_path / REJECTED, [rec(1), rec(2)])
    append_rejected(worker / REJECTED, [rec(3)])
    kafka = Kafka()
    report = await resend(journal_dirs(tmp_path), kafka, 1.0)
    assert kafka.sent == [rec(1), rec(2), rec(3)]
    assert (report.sent, report.failed, report.files) == (3, [], 2)
    assert not files(tmp_path, f"{REJECTED}*")


async def test_what_kafka_refuses_again_is_kept(tmp_path: Path) -> None:
    other = Record("gone", b"k", b"{}", [("ce_id", b"id-x")])
    append_rejected(tmp_path / REJECTED, [rec(1), other, rec(2)])
    kafka = Kafka(missing={"gone"})
    report = await resend([tmp_path], kafka, 1.0)
    assert kafka.sent == [rec(1), rec(2)]
    assert report.sent == 2
    assert len(report.failed) == 1
    assert "'gone'" in report.failed[0]
    assert read_rejected(tmp_path / REJECTED).records == [other]
    assert not files(tmp_path, f"{TAKEN_PREFIX}*")


async def test_a_file_an_interrupted_resend_left_is_taken_again(tmp_path: Path) -> None:
    append_rejected(tmp_path / REJECTED, [rec(1)])
    take_rejected(tmp_path)  # renamed, then the process died before sending
    append_rejected(tmp_path / REJECTED, [rec(2)])
    kafka = Kafka()
    await resend([tmp_path], kafka, 1.0)
    assert sorted(r.value for r in kafka.sent) == sorted([rec(1).value, rec(2).value])
    assert not files(tmp_path)


@pytest.mark.parametrize("count", [0, 1])
def test_journal_dirs_lists_the_root_and_its_workers(tmp_path: Path, count: int) -> None:
    for i in range(count):
        (tmp_path / f"worker-{i}").mkdir()
    (tmp_path / "unrelated").mkdir()
    assert journal_dirs(tmp_path) == [tmp_path] + [tmp_path / f"worker-{i}" for i in range(count)]
