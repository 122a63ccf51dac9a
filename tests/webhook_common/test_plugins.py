"""The one plugin-loading path: every kind gets the same lookup, checks and errors."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, SecretStr

from tests.plugin_dist import write_dist_info
from webhook_common.config import REDACTED, StrictModel
from webhook_common.errors import ConfigError
from webhook_common.plugins import PluginError, PluginKind, Registry

GROUP = f"webhook_gateway.test_{uuid.uuid4().hex[:8]}"
WIDGETS = PluginKind(
    noun="widget", group=GROUP, methods={"run": True}, optional_methods={"peek": False}
)


class WidgetConfig(StrictModel):
    size: int = 1
    api_token: SecretStr | None = None


class Widget:
    Config: ClassVar[type[BaseModel]] = WidgetConfig

    def __init__(self, config: WidgetConfig, secret: str = "") -> None:
        if config.size > 10:
            raise ValueError(f"size {config.size} with secret {secret} is too large")
        self.config = config

    async def run(self) -> None:
        pass


def _plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"widget_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(source)
    return module


def test_injected_classes_need_no_distribution() -> None:
    registry: Registry[Any] = Registry(WIDGETS, {"w": Widget}, use_entry_points=False)
    assert registry.names() == ["w"]
    assert registry.load("w") is Widget


def test_entry_points_are_found_and_only_the_named_one_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _plugin_module(
        tmp_path,
        monkeypatch,
        "from pydantic import BaseModel\n"
        "class W:\n    class Config(BaseModel): pass\n    async def run(self): pass\n",
    )
    write_dist_info(
        tmp_path, "widgets", "2.0", {GROUP: {"good": f"{good}:W", "broken": "no_such_mod_q:X"}}
    )
    registry: Registry[Any] = Registry(WIDGETS)
    assert registry.names() == ["broken", "good"]
    assert registry.load("good").__module__ == good  # the broken one was never imported
    with pytest.raises(PluginError) as info:
        registry.load("broken", "things.a.type")
    message = str(info.value)
    assert message.startswith(
        "things.a.type: widget 'broken': entry point 'broken = no_such_mod_q:X'"
    )
    assert "distribution widgets 2.0" in message
    assert "ModuleNotFoundError" in message


def test_a_name_two_distributions_register_is_refused_naming_both(tmp_path: Path) -> None:
    import sys

    write_dist_info(tmp_path / "a", "first-dist", "1", {GROUP: {"same": "m1:X"}})
    write_dist_info(tmp_path / "b", "second-dist", "2", {GROUP: {"same": "m2:X"}})
    sys.path[:0] = [str(tmp_path / "a"), str(tmp_path / "b")]
    try:
        registry: Registry[Any] = Registry(WIDGETS)
    finally:
        del sys.path[:2]
    with pytest.raises(PluginError) as info:
        registry.load("same")
    assert "registered more than once" in str(info.value)
    assert "first-dist 1" in str(info.value)
    assert "second-dist 2" in str(info.value)


@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        (42, "is a int, expected a widget class"),
        (type("NoConfig", (), {}), "has no pydantic 'Config' model"),
        (
            type("SyncRun", (), {"Config": WidgetConfig, "run": lambda self: None}),
            "lacks 'async def run()'",
        ),
        (
            type(
                "AsyncPeek",
                (),
                {"Config": WidgetConfig, "run": Widget.run, "peek": Widget.run},
            ),
            "lacks 'def peek()'",
        ),
    ],
)
def test_the_shape_of_the_kind_is_checked(cls: Any, problem: str) -> None:
    registry: Registry[Any] = Registry(WIDGETS, {"w": cls}, use_entry_points=False)
    with pytest.raises(PluginError, match=re.escape(problem)):
        registry.load("w", "things.a.type")


def test_unknown_name_lists_what_is_there() -> None:
    registry: Registry[Any] = Registry(WIDGETS, {"w": Widget, "v": Widget}, use_entry_points=False)
    with pytest.raises(PluginError) as info:
        registry.load("x", "things.a.type")
    assert str(info.value) == (
        "things.a.type: got 'x': expected a widget type, one of: v, w "
        f"(entry points in group {GROUP})"
    )


def test_build_validates_options_at_their_key_path_with_secrets_redacted() -> None:
    registry: Registry[Any] = Registry(WIDGETS, {"w": Widget}, use_entry_points=False)
    with pytest.raises(ConfigError) as info:
        registry.build(
            "w", {"size": "big", "api_token": 5, "extra": "s3cr3t-value"}, ["things", "a"], _make
        )
    message = str(info.value)
    assert "things.a.size: got 'big': expected" in message
    assert f"things.a.api_token: got {REDACTED}" in message
    assert "things.a.extra: got 's3cr3t-value': expected no such key" in message


def _make(cls: Any, config: Any) -> Any:
    return cls(config, "the-plugin-secret")


def test_a_constructor_failure_names_the_plugin_and_blanks_secrets() -> None:
    registry: Registry[Any] = Registry(WIDGETS, {"w": Widget}, use_entry_points=False)
    with pytest.raises(PluginError) as info:
        registry.build("w", {"size": 11}, ["things", 0], _make, secrets=["the-plugin-secret"])
    message = str(info.value)
    assert message.startswith("things[0]: widget 'w' (tests.webhook_common.test_plugins.Widget)")
    assert "refused its config: ValueError: size 11 with secret" in message
    assert "the-plugin-secret" not in message
    assert REDACTED in message


def test_build_returns_what_construct_makes() -> None:
    registry: Registry[Any] = Registry(WIDGETS, {"w": Widget}, use_entry_points=False)
    widget = registry.build("w", {"size": 3}, ["things", "a"], _make)
    assert isinstance(widget, Widget)
    assert widget.config.size == 3
