"""Replay from the page: refusals, which file and which sinks (from the sink's context),
the command, and what comes back when it runs, fails or takes too long.

Most tests stand a small script in for the Python interpreter (``sys.executable``): it
records its arguments and answers like the replay command, so no Kafka is needed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumers.config import load_config
from consumers.sinks import SinkError
from consumers.sinks.inspector import InspectorConfig, InspectorSink
from consumers.sinks.inspector.replay import (
    ReplayLauncher,
    replay_argv,
    replay_config_path,
    replay_targets,
    shell_line,
)
from consumers.sinks.inspector.web import TOKEN_HEADER
from tests.consumers.harness import wait_until
from tests.consumers.sinks.inspector.support import (
    Started,
    context,
    event,
    is_problem,
    token_of,
    write_config,
)
from webhook_common.config import validate

FILE_SINKS = {"events_file": {"type": "file", "path": "e.jsonl"}, "page": {"type": "inspector"}}
CONSUMER_SINKS = {"orders_pg": "postgres", "audit": "log", "page": "inspector"}


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the interpreter the replay command runs with: it writes its
    arguments to ``argv.txt``, then behaves as ``$FAKE_REPLAY`` says."""
    script = tmp_path / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/argv.txt"\n'
        'case "$FAKE_REPLAY" in\n'
        "  fail) echo 'a log line' >&2; echo 'error: --sinks: unknown sink(s) x' >&2; exit 2;;\n"
        "  slow) exec sleep 30;;\n"
        "  *) echo 'replayed: 1 record(s), skipped 0; per sink: orders_pg=delivered';;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))
    return tmp_path / "argv.txt"


def recorded(argv_file: Path) -> list[str]:
    """The arguments the stand-in interpreter ran with (none yet: empty)."""
    return argv_file.read_text().splitlines() if argv_file.exists() else []


@asynccontextmanager
async def inspector(
    config: InspectorConfig, *, config_path: Path | None, sink_types: Mapping[str, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], CollectorRegistry]]:
    """A started inspector named ``page``, a client, the replay header, the registry."""
    registry = CollectorRegistry()
    sink = InspectorSink(
        "page", config, context(registry, config_path=config_path, sink_types=sink_types)
    )
    await sink.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.port}") as client:
            await sink.send(event(1))
            token = token_of((await client.get("/")).text)
            yield client, {TOKEN_HEADER: token}, registry
    finally:
        await sink.aclose()


async def test_replay_refusals(started: Started) -> None:
    sink, client, _ = started
    await sink.send(event(1))
    seq = (await client.get("/api/events")).json()[0]["seq"]
    token = token_of((await client.get("/")).text)
    body = {"seq": seq, "sink": "events_file"}
    # No token (what a cross-site form would send), or a wrong one.
    is_problem(await client.post("/api/replay", json=body), 403)
    is_problem(await client.post("/api/replay", json=body, headers={TOKEN_HEADER: "x"}), 403)
    auth = {TOKEN_HEADER: token}
    is_problem(await client.post("/api/replay", content=b"{", headers=auth), 400)
    is_problem(await client.post("/api/replay", json=[1], headers=auth), 400)
    is_problem(await client.post("/api/replay", json={"seq": "1"}, headers=auth), 400)
    is_problem(await client.post("/api/replay", json={**body, "seq": 999}, headers=auth), 404)
    # Built without a config file (no config_path in the context) nor replay_config.
    disabled = is_problem(await client.post("/api/replay", json=body, headers=auth), 409)
    assert "replay_config" in disabled["detail"]
    assert (await client.get("/api/info")).json() == {
        "sink": "inspector",
        "max_events": 3,
        "replay_enabled": False,
        "replay_sinks": [],
    }


async def test_replay_targets_come_from_the_context_without_inspectors(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", FILE_SINKS)
    serving = inspector(
        InspectorConfig(port=0),
        config_path=path,
        sink_types={"events_file": "file", "page": "inspector"},
    )
    async with serving as (client, auth, _):
        info = (await client.get("/api/info")).json()
        assert (info["replay_enabled"], info["replay_sinks"]) == (True, ["events_file"])
        refused = await client.post("/api/replay", json={"seq": 1, "sink": "page"}, headers=auth)
        assert "not a replay target" in is_problem(refused, 400)["detail"]


@pytest.mark.parametrize("explicit", [False, True])
async def test_the_file_is_not_read_for_targets(tmp_path: Path, explicit: bool) -> None:
    # The file names other sinks than the consumer runs with: the button offers the
    # consumer's, whether the file is the consumer's own or a replay_config.
    path = write_config(tmp_path / "c.yaml", FILE_SINKS)
    config = InspectorConfig(port=0, replay_config=path if explicit else None)
    serving = inspector(config, config_path=path, sink_types=CONSUMER_SINKS)
    async with serving as (client, _, _):
        info = (await client.get("/api/info")).json()
    assert (info["replay_enabled"], info["replay_sinks"]) == (True, ["orders_pg", "audit"])


async def test_a_file_that_does_not_parse_still_replays(tmp_path: Path, fake_python: Path) -> None:
    # Nothing but the replay command reads the file: its errors are the command's.
    path = tmp_path / "c.yaml"
    path.write_text("consumers: [not, a, mapping\n")
    serving = inspector(InspectorConfig(port=0), config_path=path, sink_types=CONSUMER_SINKS)
    async with serving as (client, auth, registry):
        done = await client.post("/api/replay", json={"seq": 1, "sink": "audit"}, headers=auth)
    assert done.status_code == 200, done.text
    assert recorded(fake_python)[5:7] == ["--config", str(path.resolve())]
    assert registry.get_sample_value(
        "webhookgw_inspector_replays_total",
        {"sink": "page", "target": "audit", "outcome": "done"},
    ) == 1  # fmt: skip


async def test_a_replay_runs_the_command_for_the_exact_record(
    tmp_path: Path, fake_python: Path
) -> None:
    path = write_config(tmp_path / "c.yaml", FILE_SINKS)
    serving = inspector(InspectorConfig(port=0), config_path=path, sink_types=CONSUMER_SINKS)
    async with serving as (client, auth, _):
        body = {"seq": 1, "sink": "orders_pg", "ignore_routes": True}
        done = await client.post("/api/replay", json=body, headers=auth)
    assert done.status_code == 200, done.text
    doc = done.json()
    assert (doc["outcome"], doc["exit_status"]) == ("done", 0)
    assert doc["output"].startswith("replayed: 1 record(s)")
    expected = [
        "-m", "consumers", "--log-format", "text", "replay", "--config", str(path.resolve()),
        "--offsets", "2:101-101", "--topic", "webhooks.raw", "--sinks", "orders_pg",
        "--ignore-routes",
    ]  # fmt: skip
    assert recorded(fake_python) == expected
    assert doc["command"] == "python " + " ".join(expected)


async def test_a_failed_replay_shows_the_commands_error(
    tmp_path: Path, fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_REPLAY", "fail")
    path = write_config(tmp_path / "c.yaml", FILE_SINKS)
    serving = inspector(InspectorConfig(port=0), config_path=path, sink_types=CONSUMER_SINKS)
    async with serving as (client, auth, registry):
        failed = await client.post("/api/replay", json={"seq": 1, "sink": "audit"}, headers=auth)
    doc = is_problem(failed, 502)
    assert doc["detail"] == "replay failed: error: --sinks: unknown sink(s) x"
    assert registry.get_sample_value(
        "webhookgw_inspector_replays_total",
        {"sink": "page", "target": "audit", "outcome": "error"},
    ) == 1  # fmt: skip


async def test_a_slow_replay_is_stopped_and_a_second_one_waits_its_turn(
    tmp_path: Path, fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_REPLAY", "slow")
    path = write_config(tmp_path / "c.yaml", FILE_SINKS)
    config = InspectorConfig(port=0, replay_timeout_seconds=2)
    serving = inspector(config, config_path=path, sink_types=CONSUMER_SINKS)
    async with serving as (client, auth, _):
        body = {"seq": 1, "sink": "audit"}
        first = asyncio.create_task(client.post("/api/replay", json=body, headers=auth))
        await wait_until(lambda: recorded(fake_python), 10, "the first replay to run", 0.02)
        second = await client.post("/api/replay", json=body, headers=auth)
        assert "another replay" in is_problem(second, 409)["detail"]
        assert "within 2 s" in is_problem(await first, 504)["detail"]


def test_replay_command_names_the_exact_record(tmp_path: Path) -> None:
    record = {"kafka": {"topic": "webhooks.raw", "partition": 4, "offset": 17}}
    argv = replay_argv(tmp_path / "c.yaml", record, "pg", ignore_routes=True)
    assert argv[1:] == [
        "-m", "consumers", "--log-format", "text", "replay", "--config", str(tmp_path / "c.yaml"),
        "--offsets", "4:17-17", "--topic", "webhooks.raw", "--sinks", "pg", "--ignore-routes",
    ]  # fmt: skip
    assert shell_line([*argv[:2], "a b"]) == "python -m 'a b'"


def test_the_replay_file_defaults_to_the_consumers_and_relative_is_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    running = write_config(tmp_path / "conf" / "main.yaml", FILE_SINKS)
    other = write_config(tmp_path / "conf" / "replay.yaml", FILE_SINKS)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert replay_config_path("i", None, running) == running
    assert replay_config_path("i", other, running) == other
    assert replay_config_path("i", None, None) is None  # replay off: no file to run with
    # Written in a config file, a relative replay_config is taken from its directory
    # when the options are validated (the rule of every path in the config).
    from_file = validate(
        InspectorConfig, {"replay_config": "replay.yaml"}, config_dir=running.parent
    )
    assert replay_config_path("i", from_file.replay_config, running) == other
    # Set in code (no file): the working directory.
    write_config(elsewhere / "here.yaml", FILE_SINKS)
    assert replay_config_path("i", Path("here.yaml"), None) == elsewhere / "here.yaml"
    missing = validate(InspectorConfig, {"replay_config": "here.yaml"}, config_dir=running.parent)
    with pytest.raises(SinkError, match=r"replay_config '.*/conf/here.yaml' \(.*/conf/here.yaml\)"):
        replay_config_path("i", missing.replay_config, running)


async def test_a_relative_replay_config_is_taken_from_the_consumers_file_directory(
    tmp_path: Path, fake_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumers.__main__ import _build

    (tmp_path / "conf").mkdir()
    sinks: dict[str, dict[str, Any]] = {
        "audit": {"type": "log"},
        "page": {"type": "inspector", "port": 0, "replay_config": "replay.yaml"},
    }
    write_config(tmp_path / "conf" / "main.yaml", sinks)
    wanted = write_config(tmp_path / "conf" / "replay.yaml", FILE_SINKS)
    write_config(tmp_path / "replay.yaml", FILE_SINKS)  # the working directory's: not it
    monkeypatch.chdir(tmp_path)
    relative = Path("conf") / "main.yaml"  # as given on the command line
    rt = _build(load_config(relative), config_path=relative)
    page = rt.sinks["page"]
    assert isinstance(page, InspectorSink)
    await page.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{page.port}") as client:
            await page.send(event(1))
            auth = {TOKEN_HEADER: token_of((await client.get("/")).text)}
            done = await client.post("/api/replay", json={"seq": 1, "sink": "audit"}, headers=auth)
    finally:
        await page.aclose()
    assert done.status_code == 200, done.text
    assert recorded(fake_python)[5:7] == ["--config", str(wanted.resolve())]


def test_inspectors_are_never_targets() -> None:
    assert replay_targets({"a": "file", "page": "inspector", "b": "http"}) == ["a", "b"]
    assert replay_targets({}) == []


async def test_the_launcher_runs_one_replay_at_a_time(tmp_path: Path, fake_python: Path) -> None:
    launcher = ReplayLauncher(tmp_path / "c.yaml", ["pg"], timeout_seconds=30)
    assert (launcher.enabled, launcher.busy) == (True, False)
    record = {"kafka": {"topic": "t", "partition": 0, "offset": 5}}
    result = await launcher.run(record, "pg", ignore_routes=False)
    assert (result.outcome, result.exit_status) == ("done", 0)
    assert "--ignore-routes" not in recorded(fake_python)
    assert not launcher.busy
    assert not ReplayLauncher(None, [], 1).enabled


async def test_build_fills_the_context_from_the_consumers_config(tmp_path: Path) -> None:
    from consumers.__main__ import _build

    sinks: dict[str, dict[str, Any]] = {
        "events_file": {"type": "file", "path": str(tmp_path / "e.jsonl")},
        "page": {"type": "inspector", "port": 0},
    }
    path = write_config(tmp_path / "c.yaml", sinks)
    for config_path, enabled in ((path, True), (None, False)):
        rt = _build(load_config(path), config_path=config_path)
        page = rt.sinks["page"]
        assert isinstance(page, InspectorSink)
        await page.start()
        try:
            async with httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{page.port}/api/info"
                info = (await client.get(url)).json()
        finally:
            await page.aclose()
            await rt.dedup.aclose()
        assert (info["replay_enabled"], info["replay_sinks"]) == (enabled, ["events_file"])
