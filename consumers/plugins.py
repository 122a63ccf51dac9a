"""Finding sink classes by name and building the configured sinks.

Every sink type, built-in or third-party, is an entry point in the group
``webhook_gateway.sinks`` (see ``pyproject.toml``): the YAML ``type`` of a sink section
is the entry point's name. Loading happens once, at startup; a plugin that cannot be
imported, or that does not look like a sink, stops startup with a :class:`PluginError`
naming the entry point (``name = module:attr``) and the distribution that declared it,
because "import failed" alone does not tell an operator which package to fix.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, create_model

from consumers.sinks import ENTRY_POINT_GROUP, Sink, SinkContext
from webhook_common.config import validate
from webhook_common.errors import ConfigError

# Sink names appear in dedup marks, metric labels and DLQ headers: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED_METHODS = ("start", "send", "aclose")


class PluginError(ConfigError):
    """A sink plugin is missing, cannot be imported, or is not a sink class."""


def _describe(ep: EntryPoint) -> str:
    dist = ep.dist
    origin = f"distribution {dist.name} {dist.version}" if dist else "an unknown distribution"
    return f"entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP}, {origin})"


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def available_types() -> list[str]:
    """The installed sink type names, sorted."""
    return sorted(_entry_points())


def _check_sink_class(obj: object, where: str) -> type[Sink]:
    if not inspect.isclass(obj):
        raise PluginError(f"{where} is a {type(obj).__name__}, expected a sink class")
    config = getattr(obj, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, BaseModel)):
        raise PluginError(
            f"{where}: class {obj.__qualname__} has no pydantic 'Config' model "
            "(a class attribute subclassing pydantic.BaseModel)"
        )
    for method in _REQUIRED_METHODS:
        if not inspect.iscoroutinefunction(getattr(obj, method, None)):
            raise PluginError(
                f"{where}: class {obj.__qualname__} lacks 'async def {method}()' "
                "of the Sink protocol"
            )
    batch = getattr(obj, "send_batch", None)
    if batch is not None and not inspect.iscoroutinefunction(batch):
        raise PluginError(f"{where}: {obj.__qualname__}.send_batch must be 'async def'")
    return cast("type[Sink]", obj)


def load_sink_class(type_name: str) -> type[Sink]:
    """Import the sink class registered as ``type_name``. Raises :class:`PluginError`."""
    found = _entry_points()
    candidates = found.get(type_name)
    if not candidates:
        available = ", ".join(sorted(found)) or "none"
        raise PluginError(
            f"no sink type {type_name!r} is installed (entry-point group {ENTRY_POINT_GROUP}); "
            f"available: {available}"
        )
    if len(candidates) > 1:
        # Two packages claiming one name would make the choice depend on sys.path order.
        claims = "; ".join(_describe(ep) for ep in candidates)
        raise PluginError(f"sink type {type_name!r} is registered more than once: {claims}")
    ep = candidates[0]
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise PluginError(
            f"sink plugin {_describe(ep)} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    return _check_sink_class(obj, f"sink plugin {_describe(ep)}")


def _at(model: type[BaseModel], segments: list[str]) -> type[BaseModel]:
    """Wrap ``model`` in one model per path segment, so validation errors carry the full
    key path (``consumers.sinks.<name>.<key>``) and secrets anywhere on it are redacted."""
    for depth, segment in enumerate(reversed(segments)):
        model = create_model(
            f"_Under{depth}",
            __config__=ConfigDict(extra="ignore"),
            inner=(model, Field(alias=segment)),
        )
    return model


def _validate_at(model: type[BaseModel], data: Mapping[str, Any], segments: list[str]) -> Any:
    nested: Any = dict(data)
    for segment in reversed(segments):
        nested = {segment: nested}
    result: Any = validate(_at(model, segments), nested)
    for _ in segments:
        result = result.inner
    return result


def build_sinks(
    sinks_section: Mapping[str, Mapping[str, Any]],
    context: SinkContext,
    *,
    path: str = "consumers.sinks",
) -> dict[str, Sink]:
    """Validate every sink section and construct the sinks (not started).

    Each section is ``{type: <entry point name>, ...the sink's Config...}``. Errors
    (:class:`ConfigError`, or :class:`PluginError` for loading) name the key path.
    The caller starts the sinks (``await sink.start()``) and closes them.
    """
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
                + (", ".join(available_types()) or "none installed")
            )
        try:
            cls = load_sink_class(type_name)
        except PluginError as exc:
            raise PluginError(f"{where}.type: {exc}") from exc.__cause__
        options = {k: v for k, v in section.items() if k != "type"}
        config = _validate_at(cls.Config, options, [*path.split("."), name])
        try:
            sinks[name] = cls(name, config, context)  # type: ignore[call-arg]
        except ConfigError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{where}: sink type {type_name!r} ({cls.__module__}.{cls.__qualname__}) "
                f"could not be constructed: {type(exc).__name__}: {exc}"
            ) from exc
    return sinks
