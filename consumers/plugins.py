"""Sink classes by name, and building the configured sinks.

Every sink type, built-in or third-party, is an entry point in the group
``webhook_gateway.sinks`` (see ``pyproject.toml``): the YAML ``type`` of a sink section
is the entry point's name. Loading, the shape check, duplicate names and option errors
follow the rules every plugin kind shares (:mod:`webhook_common.plugins`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from consumers.sinks import ENTRY_POINT_GROUP, Sink, SinkContext
from webhook_common.config import config_dir_of
from webhook_common.errors import ConfigError
from webhook_common.plugins import PluginError, PluginKind, Registry

__all__ = ["SINKS", "PluginError", "SinkRegistry", "build_sinks"]

SINKS = PluginKind(
    noun="sink",
    group=ENTRY_POINT_GROUP,
    methods={"start": True, "send": True, "aclose": True},
    optional_methods={"send_batch": True},
)

# Sink names appear in dedup marks, metric labels and DLQ headers: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SinkRegistry(Registry[Sink]):
    """The installed sink types (plus ``inject``-ed classes, for tests)."""

    def __init__(
        self, inject: Mapping[str, type[Any]] | None = None, *, use_entry_points: bool = True
    ) -> None:
        super().__init__(SINKS, inject, use_entry_points=use_entry_points)


def build_sinks(
    sinks_section: Mapping[str, Mapping[str, Any]],
    context: SinkContext,
    *,
    path: str = "consumers.sinks",
    registry: SinkRegistry | None = None,
) -> dict[str, Sink]:
    """Validate every sink section and construct the sinks (not started).

    Each section is ``{type: <entry point name>, ...the sink's Config...}``. Errors
    (:class:`ConfigError`, :class:`PluginError` for loading) name the key path. The
    caller starts the sinks (``await sink.start()``) and closes them. Relative
    ``ConfigPath`` options are taken from the directory of ``context.config_path``.
    """
    registry = registry if registry is not None else SinkRegistry()
    config_dir = config_dir_of(context.config_path) if context.config_path else None
    at = path.split(".")
    sinks: dict[str, Sink] = {}
    for name, section in sinks_section.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"{path}: sink name {name!r}: expected 1-64 letters, digits, '_', '.' or '-' "
                "starting with a letter or digit"
            )
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: got a {type(section).__name__}: expected a mapping")
        type_name = section.get("type")
        if not isinstance(type_name, str) or not type_name:
            got = "missing" if type_name is None else f"got {type_name!r}"
            raise ConfigError(
                f"{where}.type: {got}: expected a sink type, one of: "
                + (", ".join(registry.names()) or "none installed")
            )
        options = {k: v for k, v in section.items() if k != "type"}

        def construct(cls: type[Sink], config: Any, name: str = name) -> Sink:
            return cls(name, config, context)

        sinks[name] = registry.build(
            type_name, options, [*at, name], construct, config_dir=config_dir
        )
    return sinks
