"""The file sink: contract, line format, durability modes, concurrent appenders."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.plugins import build_sinks
from consumers.sinks import SinkContext, SinkError
from consumers.sinks.file import FileSink, FileSinkConfig
from consumers.testing import SinkContract, make_event
from webhook_common.errors import ConfigError


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def context() -> SinkContext:
    return SinkContext("127.0.0.1:9092", {}, CollectorRegistry())


def file_sink(path: Path, **options: Any) -> FileSink:
    sink = build_sinks({"out": {"type": "file", "path": str(path), **options}}, context())["out"]
    assert isinstance(sink, FileSink)
    return sink


class TestFileSinkContract(SinkContract):
    sink_type = "file"
    broken_retriable = True

    @pytest.fixture(autouse=True)
    def _target(self, tmp_path: Path) -> None:
        self.path = tmp_path / "sub" / "events.jsonl"
        self.tmp_path = tmp_path

    def sink_config(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    async def delivered(self, expected: int) -> list[str]:
        return [line["id"] for line in read_lines(self.path)]

    def broken_config(self) -> dict[str, Any] | None:
        # A regular file where the parent directory should be: the open fails.
        blocker = self.tmp_path / "not-a-dir"
        blocker.write_text("x")
        return {"path": str(blocker / "events.jsonl")}


class TestFileSinkContractNoFsync(TestFileSinkContract):
    def sink_config(self) -> dict[str, Any]:
        return {"path": str(self.path), "fsync": "never"}


async def test_line_has_the_documented_fields(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = file_sink(path)
    json_event = make_event("order-1", 1, headers={"x-crystallize-signature": "sig"})
    text_event = make_event("order-2", 2, body=b"plain \xff text", content_type="text/plain")
    await sink.start()
    try:
        await sink.send(json_event)
        await sink.send(text_event)
    finally:
        await sink.aclose()
    first, second = read_lines(path)
    assert first == {
        "id": json_event.id,
        "source": "contract",
        "type": "thing.happened",
        "key": "order-1",
        "time": json_event.time,
        "content_type": "application/json",
        "headers": {"x-crystallize-signature": "sig"},
        "body": {"key": "order-1", "n": 1, "text": "héllo"},
        "kafka": {"topic": "webhooks.raw", "partition": 0, "offset": json_event.offset},
    }
    # Not JSON: the raw text, invalid UTF-8 replaced, so every line stays one JSON object.
    assert second["body"] == "plain \ufffd text"
    assert second["content_type"] == "text/plain"


@pytest.fixture
def fsync_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file size each time the sink calls fsync (what that fsync made durable)."""
    sizes: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        real(fd)
        sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr("consumers.sinks.file.os.fsync", recording)
    return sizes


async def test_always_returns_only_after_fsync_covering_the_line(
    tmp_path: Path, fsync_sizes: list[int]
) -> None:
    path = tmp_path / "events.jsonl"
    sink = file_sink(path, fsync="always")
    await sink.start()
    try:
        for n in range(5):
            await sink.send(make_event("k", n))
            # When send returns, an fsync has covered the whole file written so far.
            assert fsync_sizes
            assert fsync_sizes[-1] == path.stat().st_size
    finally:
        await sink.aclose()
    assert len(read_lines(path)) == 5


async def test_always_group_commits_concurrent_sends(
    tmp_path: Path, fsync_sizes: list[int]
) -> None:
    path = tmp_path / "events.jsonl"
    sink = file_sink(path, fsync="always")
    await sink.start()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(sink.send(make_event(f"k{n}", n)) for n in range(200))), 30
        )
        synced = len(fsync_sizes)
    finally:
        await sink.aclose()
    assert len(read_lines(path)) == 200
    assert 1 <= synced < 200  # lines that queued together shared an fsync


async def test_batch_writes_before_returning_and_fsyncs_later(
    tmp_path: Path, fsync_sizes: list[int]
) -> None:
    path = tmp_path / "events.jsonl"
    sink = file_sink(path, fsync="batch", fsync_interval_seconds=0.05)
    await sink.start()
    try:
        await sink.send(make_event())
        # Written to the OS already: another reader sees the line.
        assert len(read_lines(path)) == 1
        for _ in range(1000):  # up to 10 s
            if fsync_sizes:
                break
            await asyncio.sleep(0.01)
        assert fsync_sizes[-1] == path.stat().st_size
    finally:
        await sink.aclose()


async def test_never_does_not_fsync(tmp_path: Path, fsync_sizes: list[int]) -> None:
    path = tmp_path / "events.jsonl"
    sink = file_sink(path, fsync="never")
    await sink.start()
    try:
        await sink.send(make_event())
        assert len(read_lines(path)) == 1
    finally:
        await sink.aclose()
    assert fsync_sizes == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
async def test_write_failure_is_retriable_and_names_the_file() -> None:
    sink = file_sink(Path("/dev/full"), fsync="never")
    await sink.start()
    try:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event())
    finally:
        await sink.aclose()
    assert info.value.retriable is True
    assert "'/dev/full'" in str(info.value)
    assert "'out'" in str(info.value)


async def test_two_appenders_never_interleave_lines(tmp_path: Path) -> None:
    # Two sinks on one file stand for two consumer processes sharing it.
    path = tmp_path / "shared.jsonl"
    sinks = [file_sink(path, fsync="never"), file_sink(path, fsync="never")]
    big = "x" * 50_000  # lines far larger than a pipe buffer
    events = [make_event(f"k{n}", n, body=orjson.dumps({"pad": big, "n": n})) for n in range(60)]
    for sink in sinks:
        await sink.start()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(sinks[n % 2].send(e) for n, e in enumerate(events))), 30
        )
    finally:
        for sink in sinks:
            await sink.aclose()
    lines = read_lines(path)  # every line parses: none was torn by the other writer
    assert sorted(line["id"] for line in lines) == sorted(e.id for e in events)


async def test_creates_the_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "events.jsonl"
    sink = file_sink(path)
    await sink.start()
    await sink.aclose()
    assert path.parent.is_dir()


def test_config_errors_name_the_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        file_sink(tmp_path / "x.jsonl", fsync="sometimes")
    assert "consumers.sinks.out.fsync: got 'sometimes'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_sinks({"out": {"type": "file"}}, context())
    assert "consumers.sinks.out.path: missing" in str(info.value)


def test_default_is_fsync_always(tmp_path: Path) -> None:
    assert FileSinkConfig(path=tmp_path / "x").fsync == "always"
