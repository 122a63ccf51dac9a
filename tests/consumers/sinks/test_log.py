"""The log sink: one INFO line per event, no body unless asked."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.plugins import build_sinks
from consumers.sinks import SinkContext
from consumers.sinks.log import LOGGER
from consumers.testing import SinkContract, make_event


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


class TestLogSinkContract(SinkContract):
    sink_type = "log"

    @pytest.fixture(autouse=True)
    def _capture(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger=LOGGER)
        self.caplog = caplog

    def sink_config(self) -> dict[str, Any]:
        return {}

    async def delivered(self, expected: int) -> list[str]:
        return [str(r.__dict__["event_id"]) for r in records(self.caplog)]


async def run(options: dict[str, Any], caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    sink = build_sinks({"audit": {"type": "log", **options}}, context)["audit"]
    await sink.start()
    try:
        await sink.send(make_event("order-7", 3, body=b'{"email": "a@example.com"}'))
    finally:
        await sink.aclose()
    (record,) = records(caplog)
    return record


async def test_one_info_line_without_body(caplog: pytest.LogCaptureFixture) -> None:
    record = await run({}, caplog)
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "source='contract'" in message
    assert "type='thing.happened'" in message
    assert "key='order-7'" in message
    assert "a@example.com" not in message
    assert record.__dict__["sink"] == "audit"
    assert "event_body" not in record.__dict__


async def test_body_when_configured_and_cut(caplog: pytest.LogCaptureFixture) -> None:
    record = await run({"include_body": True, "max_body_chars": 12, "level": "WARNING"}, caplog)
    assert record.levelno == logging.WARNING
    assert record.__dict__["event_body"] == '{"email":"a@...'
    assert 'body={"email":"a@...' in record.getMessage()


async def test_newlines_in_a_key_stay_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    context = SinkContext("127.0.0.1:9092", {}, CollectorRegistry())
    sink = build_sinks({"audit": {"type": "log"}}, context)["audit"]
    await sink.start()
    await sink.send(make_event("evil\nFAKE LOG LINE"))
    await sink.aclose()
    (record,) = records(caplog)
    assert "\n" not in record.getMessage()
