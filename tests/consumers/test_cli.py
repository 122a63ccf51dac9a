"""The command line as a user runs it: help, and one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from consumers.replay import parse_offsets, parse_time_arg
from tests.cli import run_module
from webhook_common.errors import ConfigError


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("consumers", *args, cwd=cwd)


@pytest.mark.parametrize("command", ["run", "replay"])
def test_help_has_examples(command: str) -> None:
    res = cli(command, "--help")
    assert res.returncode == 0
    assert "examples:" in res.stdout
    assert f"python -m consumers {command} --config" in res.stdout


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    res = cli("run", "--config", str(tmp_path / "none.yaml"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: config file '{tmp_path / 'none.yaml'}' does not exist"
    ]


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("consumers:\n  sinks: {f: {type: file, path: x}}\n  unrouted: keep\n")
    res = cli("run", "--config", str(path))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ")
    assert "consumers.unrouted: got 'keep'" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_sink_type_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("consumers:\n  sinks: {f: {type: nosuch}}\n  routes: [{name: a, sinks: [f]}]\n")
    res = cli("run", "--config", str(path))
    assert res.returncode == 2
    assert "consumers.sinks.f.type" in res.stderr
    assert "Traceback" not in res.stderr


def test_replay_argument_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("consumers:\n  sinks: {f: {type: file, path: x}}\n")
    res = cli("replay", "--config", str(path), "--from-dlq", "--sinks", "g")
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "error: --sinks: unknown sink(s) g: expected names from consumers.sinks (f)"
    )
    res = cli("replay", "--config", str(path), "--from-raw", "--sinks", "f")
    assert res.stderr.strip() == "error: --from-raw: expected --since and/or --until"
    res = cli("replay", "--config", str(path), "--offsets", "0:9-3", "--sinks", "f")
    assert "--offsets '0:9-3'" in res.stderr
    res = cli(
        "replay", "--config", str(path), "--from-dlq", "--since", "2025-01-01", "--sinks", "f"
    )
    assert res.stderr.strip() == "error: --since/--until: only with --from-raw"


def test_parse_offsets_and_times() -> None:
    ranges = parse_offsets(["0:100-250", "3:7-7"], "raw")
    assert [(r.partition, r.start, r.end, r.size) for r in ranges] == [
        (0, 100, 251, 151),
        (3, 7, 8, 1),
    ]
    with pytest.raises(ConfigError, match="PARTITION:START-END"):
        parse_offsets(["x"], "raw")
    assert parse_time_arg("--since", "2025-01-31T12:00:00").tzinfo is not None
    assert parse_time_arg("--since", "2025-01-31T12:00:00Z").hour == 12
    with pytest.raises(ConfigError, match="--until 'yesterday'"):
        parse_time_arg("--until", "yesterday")


def test_the_dlq_producer_takes_a_record_as_large_as_the_gateway_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import consumers.__main__ as main
    from consumers.config import parse_config

    def producer(**kwargs: object) -> dict[str, object]:
        return kwargs  # what the producer would be built with

    monkeypatch.setattr(main, "AIOKafkaProducer", producer)
    # The gateway writes records up to its largest body_limit (1 MiB by default) plus
    # 64 KiB for headers; a dead letter is such a record plus a few headers.
    sinks = {"f": {"type": "file", "path": "x"}}
    default: Any = main._producer(parse_config({"consumers": {"sinks": sinks}}))
    assert default["max_request_size"] >= 1024 * 1024 + 64 * 1024
    larger = parse_config({"consumers": {"sinks": sinks, "max_record_bytes": 5 * 1024 * 1024}})
    assert main._producer(larger)["max_request_size"] >= 5 * 1024 * 1024
