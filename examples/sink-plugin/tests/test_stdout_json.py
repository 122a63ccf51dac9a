"""The example plugin passes the sink contract, plus tests of its own options."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from wg_stdout_sink import StdoutJsonSink

from consumers.sinks import SinkError
from consumers.testing import SinkContract, make_event


class TestStdoutJsonSink(SinkContract):
    """Inherits every contract test; only says how to configure and observe the sink."""

    sink_type = "stdout-json"

    @pytest.fixture(autouse=True)
    def _capture(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.lines: list[str] = []

    def sink_config(self) -> dict[str, Any]:
        return {"fields": ["id", "key"]}

    async def delivered(self, expected: int) -> list[str]:
        self.lines.extend(self.capsys.readouterr().out.splitlines())
        return [json.loads(line)["id"] for line in self.lines]


class TestStdoutJsonSinkOnStderr(TestStdoutJsonSink):
    def sink_config(self) -> dict[str, Any]:
        return {"stream": "stderr"}

    async def delivered(self, expected: int) -> list[str]:
        self.lines.extend(self.capsys.readouterr().err.splitlines())
        return [json.loads(line)["id"] for line in self.lines]


class BrokenPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.asyncio
async def test_selected_fields_only(capsys: pytest.CaptureFixture[str]) -> None:
    sink = TestStdoutJsonSink().build({"fields": ["key", "body", "kafka"]})
    event = make_event("order-1", 4)
    await sink.start()
    await sink.send(event)
    await sink.aclose()
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "key": "order-1",
        "body": {"key": "order-1", "n": 4, "text": "héllo"},
        "kafka": {"topic": "webhooks.raw", "partition": 0, "offset": event.offset},
    }


@pytest.mark.asyncio
async def test_a_vanished_reader_is_not_retriable(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = TestStdoutJsonSink().build({})
    assert isinstance(sink, StdoutJsonSink)
    monkeypatch.setattr("sys.stdout", BrokenPipe())
    await sink.start()
    with pytest.raises(SinkError) as info:
        await sink.send(make_event())
    await sink.aclose()
    assert info.value.retriable is False
