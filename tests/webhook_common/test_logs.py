from __future__ import annotations

import logging

import orjson
import pytest

from webhook_common.logs import JsonFormatter, Redactor, setup_logging


def test_json_formatter_includes_extra() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "hello %s", ("w",), None)
    record.source = "crystallize"
    out = orjson.loads(JsonFormatter().format(record))
    assert out["message"] == "hello w"
    assert out["source"] == "crystallize"
    assert out["level"] == "info"


def test_redactor_removes_known_secrets_as_written_and_json_escaped() -> None:
    redact = Redactor(["supersecret1", 'quo"te\\secret', "short"])
    assert redact("token=supersecret1") == "token=<redacted>"
    assert redact(orjson.dumps({"e": 'x quo"te\\secret y'}).decode()) == '{"e":"x <redacted> y"}'
    assert redact("a short word") == "a short word"  # under 6 characters: not a secret


def test_every_part_of_a_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=True, secrets=["hunter2-hunter2"])
    try:
        try:
            raise ValueError("bad header b'Bearer hunter2-hunter2'")
        except ValueError:
            logging.getLogger("t").exception(
                "failed", extra={"dsn": "postgresql://u:hunter2-hunter2@db/x"}
            )
        err = capsys.readouterr().err
        assert "hunter2-hunter2" not in err
        line = orjson.loads(err.strip().splitlines()[-1])
        assert line["dsn"] == "postgresql://u:<redacted>@db/x"
        assert "Bearer <redacted>" in line["exc"]
    finally:
        _remove_handler()


def _remove_handler() -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_webhookgw", False):
            root.removeHandler(h)


def test_setup_logging_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=True, secrets=["a-long-secret"])
    try:
        logging.getLogger("t").info("leak a-long-secret here")
        err = capsys.readouterr().err
        assert "a-long-secret" not in err
        assert "<redacted>" in err
    finally:
        _remove_handler()


def test_log_settings_take_the_command_line_then_the_environment_then_the_config() -> None:
    from webhook_common.logs import log_settings

    assert log_settings("INFO", "json", where="gateway", env={}) == ("INFO", "json")
    env = {"LOG_LEVEL": "debug", "LOG_FORMAT": "TEXT"}
    assert log_settings("INFO", "json", where="gateway", env=env) == ("DEBUG", "text")
    assert log_settings(
        "INFO", "json", where="consumers", env=env, cli_level="error", cli_format="json"
    ) == ("ERROR", "json")
    assert log_settings("INFO", "json", where="x", env={"LOG_LEVEL": ""}) == ("INFO", "json")


def test_a_bad_log_setting_names_where_it_came_from() -> None:
    import pytest

    from webhook_common.errors import ConfigError
    from webhook_common.logs import log_settings

    with pytest.raises(ConfigError, match="LOG_LEVEL: got 'loud': expected one of DEBUG, INFO"):
        log_settings("INFO", "json", where="gateway", env={"LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="--log-format: got 'xml': expected one of json, text"):
        log_settings("INFO", "json", where="consumers", env={}, cli_format="xml")
