"""The file sink: contract, line format, durability modes, concurrent appenders, crash
recovery (ids already in the file are not written again)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.event import Event
from consumers.plugins import build_sinks
from consumers.sinks import SinkContext, SinkError
from consumers.sinks.file import FileSink, FileSinkConfig, event_line
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


# -- crash recovery: ids already in the file are not written again -----------------------


def recovering_sink(path: Path, registry: CollectorRegistry, **options: Any) -> FileSink:
    ctx = SinkContext("127.0.0.1:9092", {}, registry)
    sink = build_sinks({"out": {"type": "file", "path": str(path), **options}}, ctx)["out"]
    assert isinstance(sink, FileSink)
    return sink


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"sink": "out"})


async def write_events(path: Path, events: list[Event], **options: Any) -> None:
    sink = file_sink(path, **options)
    await sink.start()
    try:
        for event in events:
            await sink.send(event)
    finally:
        await sink.aclose()


async def test_restart_does_not_rewrite_events_the_file_holds(tmp_path: Path) -> None:
    # The crash window: lines written, dedup marks not yet; after the restart the
    # consumer offers the same events again.
    path = tmp_path / "events.jsonl"
    before = [make_event(f"k{n}", n) for n in range(5)]
    await write_events(path, before)

    registry = CollectorRegistry()
    sink = recovering_sink(path, registry)
    fresh = [make_event("k9", 9), make_event("k10", 10)]
    await sink.start()
    try:
        await sink.send(before[3])
        await sink.send(fresh[0])
        await sink.send_batch([before[4], fresh[1], before[0]])
    finally:
        await sink.aclose()

    ids = [line["id"] for line in read_lines(path)]
    assert ids == [e.id for e in before + fresh]
    assert sink.recovered_ids == 5
    assert sample(registry, "webhookgw_file_sink_recovered_ids") == 5
    assert sample(registry, "webhookgw_file_sink_already_written_total") == 3


async def test_torn_last_line_is_skipped_and_the_next_line_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    kept = make_event("k1", 1)
    torn = make_event("k2", 2)
    await write_events(path, [kept])
    with path.open("ab") as out:  # a write cut short by a crash: no newline at the end
        out.write(event_line(torn)[:-20])

    registry = CollectorRegistry()
    sink = recovering_sink(path, registry)
    await sink.start()
    try:
        await sink.send(kept)  # whole line in the file: not written again
        await sink.send(torn)  # only a fragment in the file: written
    finally:
        await sink.aclose()

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = []
    for line in lines[:-1]:
        try:
            parsed.append(orjson.loads(line)["id"])
        except orjson.JSONDecodeError:
            parsed.append(None)
    # The fragment stays one unparseable line; the new line is whole, on its own line.
    assert parsed == [kept.id, None, torn.id]
    assert sink.recovered_ids == 1


async def test_only_whole_lines_inside_the_tail_window_count(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    # Same-length lines, so the window can be placed on and between line boundaries.
    events = [make_event("k", n, id=f"evt-{n:04d}", offset=n) for n in range(10)]
    await write_events(path, events)
    length = len(event_line(events[0]))
    assert path.stat().st_size == 10 * length

    for window, expected in [
        (3 * length, events[7:]),  # starts exactly on a line: that line counts
        (3 * length + length // 2, events[7:]),  # starts mid-line: that line does not
        (3 * length - 1, events[8:]),
        (100 * length, events),  # larger than the file: all of it
    ]:
        sink = recovering_sink(path, CollectorRegistry(), recover_tail_bytes=window)
        await sink.start()
        try:
            assert sink.recovered_ids == len(expected), window
            for event in expected:
                await sink.send(event)
        finally:
            await sink.aclose()
        assert path.stat().st_size == 10 * length, window  # nothing was written again


async def test_recovery_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    event = make_event()
    await write_events(path, [event])
    await write_events(path, [event], recover_tail_bytes=0)
    assert [line["id"] for line in read_lines(path)] == [event.id, event.id]


async def test_lines_that_are_not_events_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'not json\n[1, 2]\n{"id": 7}\n{"no_id": "x"}\n\n{"id": "evt-hand-written"}\n')
    sink = recovering_sink(path, CollectorRegistry())
    await sink.start()
    await sink.aclose()
    assert sink.recovered_ids == 1


async def test_a_missing_file_recovers_nothing(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    sink = recovering_sink(tmp_path / "new.jsonl", registry)
    await sink.start()
    await sink.aclose()
    assert sink.recovered_ids == 0
    assert sample(registry, "webhookgw_file_sink_recovered_ids") == 0


async def test_send_after_close_fails_even_for_a_recovered_id(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    event = make_event()
    await write_events(path, [event])
    sink = recovering_sink(path, CollectorRegistry())
    await sink.start()
    await sink.aclose()
    with pytest.raises(SinkError, match="closed"):
        await sink.send(event)


def test_recover_tail_bytes_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        file_sink(tmp_path / "x.jsonl", recover_tail_bytes=-1)
    assert "consumers.sinks.out.recover_tail_bytes: got -1" in str(info.value)
    assert FileSinkConfig(path=tmp_path / "x").recover_tail_bytes == 8 * 1024 * 1024


async def test_a_running_sink_learns_what_another_process_appended(tmp_path: Path) -> None:
    # Two consumer processes share one file; one is killed after writing lines whose
    # marks were not yet written, and its partition moves to the one already running.
    path = tmp_path / "shared.jsonl"
    registry = CollectorRegistry()
    survivor = recovering_sink(path, registry)
    await survivor.start()
    try:
        await survivor.send(make_event("k0", 0))
        killed = [make_event(f"k{n}", n) for n in range(1, 4)]
        await write_events(path, killed)  # the other process, then gone
        for event in [*killed, make_event("k4", 4)]:  # redelivered after the rebalance
            await survivor.send(event)
    finally:
        await survivor.aclose()
    ids = [line["id"] for line in read_lines(path)]
    assert len(ids) == len(set(ids)) == 5
    assert sample(registry, "webhookgw_file_sink_already_written_total") == 3


async def test_an_id_is_remembered_only_after_its_line_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = recovering_sink(path, CollectorRegistry(), fsync="never")
    await sink.start()
    event = make_event("k1", 1)
    real_write = os.write
    failures = iter([OSError(28, "No space left on device")])

    def flaky_write(fd: int, data: Any) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_write(fd, data)

    try:
        monkeypatch.setattr(os, "write", flaky_write)
        with pytest.raises(SinkError):
            await sink.send(event)
        await sink.send(event)  # the retry must write it, not skip it as known
        await sink.send(event)  # now it is in the file: skipped
    finally:
        await sink.aclose()
    assert [line["id"] for line in read_lines(path)] == [event.id]


async def test_a_lone_writer_does_not_reread_its_own_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = recovering_sink(path, CollectorRegistry())
    reads: list[tuple[int, int]] = []
    real = FileSink._ids_between

    def counting(self: FileSink, begin: int, end: int) -> set[str]:
        reads.append((begin, end))
        return real(self, begin, end)

    monkeypatch.setattr(FileSink, "_ids_between", counting)
    await sink.start()
    try:
        for n in range(20):
            await sink.send(make_event(f"k{n}", n))
    finally:
        await sink.aclose()
    assert reads == []  # an empty file at start: nothing to read, then only our writes
    assert len(read_lines(path)) == 20


async def test_batch_fsyncs_every_interval_while_lines_keep_coming(
    tmp_path: Path, fsync_sizes: list[int]
) -> None:
    path = tmp_path / "events.jsonl"
    sink = file_sink(path, fsync="batch", fsync_interval_seconds=0.05)
    await sink.start()
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.5
        n = 0
        while loop.time() < until:  # never idle for a whole interval
            await asyncio.gather(*(sink.send(make_event(f"k{n}-{i}", n)) for i in range(5)))
            n += 1
        during = len(fsync_sizes)
    finally:
        await sink.aclose()
    assert during >= 3  # ~10 intervals passed; not only the fsync at close
    assert len(read_lines(path)) == 5 * n


async def test_close_stops_the_writer_thread(tmp_path: Path) -> None:
    import threading

    sink = file_sink(tmp_path / "events.jsonl", fsync="never")
    await sink.start()
    await sink.send(make_event())
    name = f"file-sink-{sink.name}"
    assert any(t.name == name for t in threading.enumerate())
    await sink.aclose()
    for _ in range(200):
        if not any(t.name == name for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)
    assert not any(t.name == name for t in threading.enumerate())
