from __future__ import annotations

import logging

import orjson
import pytest

from webhook_common.logs import JsonFormatter, RedactingFilter, setup_logging


def test_json_formatter_includes_extra() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "hello %s", ("w",), None)
    record.source = "crystallize"
    out = orjson.loads(JsonFormatter().format(record))
    assert out["message"] == "hello w"
    assert out["source"] == "crystallize"
    assert out["level"] == "info"


def test_redacting_filter_removes_known_secret() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "token=%s", ("supersecret1",), None)
    RedactingFilter(["supersecret1"]).filter(record)
    assert record.getMessage() == "token=<redacted>"


def test_setup_logging_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=True, secrets=["a-long-secret"])
    try:
        logging.getLogger("t").info("leak a-long-secret here")
        err = capsys.readouterr().err
        assert "a-long-secret" not in err
        assert "<redacted>" in err
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, "_webhookgw", False):
                root.removeHandler(h)
