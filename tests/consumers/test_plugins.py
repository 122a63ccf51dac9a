"""Loading sinks by entry point: built-ins, the example plugin, broken plugins, config errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from consumers.plugins import PluginError, SinkRegistry, build_sinks
from consumers.sinks import ENTRY_POINT_GROUP, SinkContext
from consumers.sinks.file import FileSink
from tests.plugin_dist import lay_out_project, write_dist_info
from webhook_common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sink-plugin"
BUILT_IN = {"file", "http", "kafka", "postgres", "log"}


def context() -> SinkContext:
    return SinkContext("127.0.0.1:9092", {}, CollectorRegistry())


@pytest.fixture
def example_plugin(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh interpreter in which the example plugin is installed."""
    paths = lay_out_project(EXAMPLE, tmp_path / "site")
    pythonpath = os.pathsep.join([*map(str, paths), str(ROOT)])
    return {**os.environ, "PYTHONPATH": pythonpath}


# A stand-in for an installed distribution: a .dist-info with entry points, on sys.path.
MakePlugin = Callable[..., str]


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakePlugin:
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(
        source: str,
        *,
        dist: str = "broken-sink-plugin",
        version: str = "1.2.3",
        attr: str = "BrokenSink",
        type_name: str | None = None,
    ) -> str:
        module = f"plugin_{uuid.uuid4().hex[:10]}"
        type_name = type_name or f"t-{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(source)
        write_dist_info(
            tmp_path, dist, version, {ENTRY_POINT_GROUP: {type_name: f"{module}:{attr}"}}
        )
        return f"{type_name} = {module}:{attr}"

    return make


def test_built_in_sinks_load_through_the_entry_point_group() -> None:
    assert set(SinkRegistry().names()) >= BUILT_IN
    for name in BUILT_IN:
        cls = SinkRegistry().load(name)
        assert issubclass(cls.Config, BaseModel)
    loaded: object = SinkRegistry().load("file")
    assert loaded is FileSink


def test_unknown_type_lists_the_available_ones() -> None:
    with pytest.raises(PluginError) as info:
        SinkRegistry().load("fiel")
    message = str(info.value)
    assert "'fiel'" in message
    assert "webhook_gateway.sinks" in message
    listed = message.split("one of: ")[1].split(" (entry points")[0].split(", ")
    assert listed == sorted(SinkRegistry().names())
    assert set(listed) >= BUILT_IN


def test_a_plugin_that_fails_to_import_names_entry_point_and_distribution(
    make_plugin: MakePlugin,
) -> None:
    spec = make_plugin("import not_installed_dependency_xyz\n")
    with pytest.raises(PluginError) as info:
        SinkRegistry().load(spec.split(" = ")[0])
    message = str(info.value)
    assert f"'{spec}'" in message
    assert "broken-sink-plugin 1.2.3" in message
    assert "ModuleNotFoundError" in message
    assert "not_installed_dependency_xyz" in message
    assert isinstance(info.value, ConfigError)  # so startup reports it like any config error


def test_a_plugin_raising_at_import_is_reported_too(make_plugin: MakePlugin) -> None:
    spec = make_plugin("raise RuntimeError('boom at import')\n", dist="other-plugin", version="9")
    with pytest.raises(PluginError, match=r"other-plugin 9\).*RuntimeError: boom at import"):
        SinkRegistry().load(spec.split(" = ")[0])


def test_a_missing_attribute_is_reported(make_plugin: MakePlugin) -> None:
    spec = make_plugin("X = 1\n", attr="Nope")
    with pytest.raises(PluginError, match="AttributeError"):
        SinkRegistry().load(spec.split(" = ")[0])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("BrokenSink = 42\n", "is a int, expected a sink class"),
        ("class BrokenSink:\n    pass\n", "has no pydantic 'Config' model"),
        (
            "from pydantic import BaseModel\n"
            "class BrokenSink:\n"
            "    class Config(BaseModel): pass\n"
            "    async def start(self): pass\n"
            "    def send(self, event): pass\n"
            "    async def aclose(self): pass\n",
            "lacks 'async def send()'",
        ),
    ],
)
def test_an_object_that_is_not_a_sink_is_refused(
    make_plugin: MakePlugin, source: str, expected: str
) -> None:
    spec = make_plugin(source)
    with pytest.raises(PluginError) as info:
        SinkRegistry().load(spec.split(" = ")[0])
    assert expected in str(info.value)
    assert f"'{spec}'" in str(info.value)


def test_one_type_registered_twice_is_refused(make_plugin: MakePlugin) -> None:
    make_plugin("", dist="first-plugin", type_name="twice")
    make_plugin("", dist="second-plugin", type_name="twice")
    with pytest.raises(PluginError) as info:
        SinkRegistry().load("twice")
    assert "first-plugin" in str(info.value)
    assert "second-plugin" in str(info.value)


def test_build_sinks_names_the_key_path_of_a_broken_plugin(make_plugin: MakePlugin) -> None:
    spec = make_plugin("import not_installed_dependency_xyz\n")
    type_name = spec.split(" = ")[0]
    with pytest.raises(PluginError) as info:
        build_sinks({"out": {"type": type_name}}, context())
    assert str(info.value).startswith("consumers.sinks.out.type: ")
    assert "broken-sink-plugin 1.2.3" in str(info.value)


def test_a_constructor_failure_is_reported(make_plugin: MakePlugin) -> None:
    source = (
        "from pydantic import BaseModel\n"
        "class BrokenSink:\n"
        "    class Config(BaseModel): pass\n"
        "    def __init__(self, name, config, context): raise ValueError('bad init')\n"
        "    async def start(self): pass\n"
        "    async def send(self, event): pass\n"
        "    async def aclose(self): pass\n"
    )
    type_name = make_plugin(source).split(" = ")[0]
    with pytest.raises(PluginError, match=r"consumers\.sinks\.s: .*ValueError: bad init"):
        build_sinks({"s": {"type": type_name}}, context())


@pytest.mark.parametrize(
    ("sinks", "expected"),
    [
        (
            {"out": {"path": "x"}},
            "consumers.sinks.out.type: missing: expected a sink type, one of:",
        ),
        ({"out": {"type": "fiel"}}, "consumers.sinks.out.type: got 'fiel': expected a sink type"),
        ({"out": ["file"]}, "consumers.sinks.out: got a list: expected a mapping"),
        ({"bad name": {"type": "log"}}, "consumers.sinks: sink name 'bad name'"),
        ({"out": {"type": "log", "levle": "INFO"}}, "consumers.sinks.out.levle: got 'INFO': "),
        ({"out": {"type": "log", "level": "LOUD"}}, "consumers.sinks.out.level: got 'LOUD': "),
    ],
)
def test_build_sinks_errors_name_the_key_path(sinks: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_sinks(sinks, context())
    assert expected in str(info.value)


def test_build_sinks_redacts_secrets_in_errors() -> None:
    sinks = {"db": {"type": "postgres", "dsn": ["not", "a", "string"], "password_x": "hunter22"}}
    with pytest.raises(ConfigError) as info:
        build_sinks(sinks, context())
    assert "consumers.sinks.db.password_x: got <redacted>" in str(info.value)
    assert "hunter22" not in str(info.value)


def test_build_sinks_honours_another_path() -> None:
    with pytest.raises(ConfigError, match=r"replay\.sinks\.out\.type"):
        build_sinks({"out": {}}, context(), path="replay.sinks")


def test_build_sinks_builds_every_section(tmp_path: Path) -> None:
    sinks = build_sinks(
        {"a": {"type": "file", "path": str(tmp_path / "a.jsonl")}, "b": {"type": "log"}},
        context(),
    )
    assert {name: type(s).__name__ for name, s in sinks.items()} == {
        "a": "FileSink",
        "b": "LogSink",
    }
    assert sinks["a"].name == "a"


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_the_example_plugin_is_found_by_name(example_plugin: dict[str, str]) -> None:
    # A fresh interpreter, as the consumer process would be after `pip install`.
    result = run_python(
        "from consumers.plugins import SinkRegistry\n"
        "cls = SinkRegistry().load('stdout-json')\n"
        "print(cls.__module__, cls.__name__, 'stdout-json' in SinkRegistry().names())\n",
        example_plugin,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wg_stdout_sink", "StdoutJsonSink", "True"]


def test_the_example_plugin_passes_the_contract_tests(example_plugin: dict[str, str]) -> None:
    # Run the plugin's own test suite as its author would: pytest in its directory.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=example_plugin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None, summary
    assert int(passed.group(1)) >= 10  # the inherited contract tests ran, not zero
    assert "failed" not in summary
    assert "error" not in summary
