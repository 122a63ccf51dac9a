"""Plugins: classes found by name in an entry-point group, checked and built from config.

Every plugin kind (verifiers on the gateway, sinks on the consumers, any later kind)
goes through :class:`Registry`: built-ins are entry points of this project in the same
groups as third-party packages, so there is one way in. The rules, the same for every
kind:

* a name is looked up among injected classes first (tests pass them instead of
  installing a distribution), then among the group's entry points;
* only the named entry point is imported, so a broken plugin nobody configured cannot
  stop a process;
* a name that two distributions register is refused, naming both: the choice would
  otherwise depend on ``sys.path`` order;
* the class must have a pydantic ``Config`` model and the kind's methods (async where
  the kind says so); its options are validated against ``Config`` with errors naming
  the key path as the user wrote it, secrets redacted;
* anything that fails ends as one :class:`PluginError` naming the key path, the entry
  point and the distribution that declared it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel

from webhook_common.config import REDACTED, format_path, validate
from webhook_common.errors import ConfigError

__all__ = ["Configurable", "PluginError", "PluginKind", "Registry"]


class Configurable(Protocol):
    """What every plugin class has: the pydantic model of its config section."""

    Config: ClassVar[type[BaseModel]]


P = TypeVar("P", bound=Configurable)


class PluginError(ConfigError):
    """A plugin is unknown, registered twice, cannot be imported, is not of its kind,
    or refused its config. Reported at startup like any configuration error."""


@dataclass(frozen=True, slots=True)
class PluginKind:
    """What a kind of plugin is: its noun in messages, its entry-point group and the
    methods its classes must have (name -> whether it must be ``async def``)."""

    noun: str
    group: str
    methods: Mapping[str, bool]
    optional_methods: Mapping[str, bool] = field(default_factory=dict)


def _origin(ep: EntryPoint, group: str) -> str:
    dist = ep.dist
    where = f"distribution {dist.name} {dist.version}" if dist else "an unknown distribution"
    return f"entry point '{ep.name} = {ep.value}' (group {group}, {where})"


class Registry(Generic[P]):
    """The classes of one plugin kind, by name: injected ones, then entry points."""

    def __init__(
        self,
        kind: PluginKind,
        inject: Mapping[str, type[Any]] | None = None,
        *,
        use_entry_points: bool = True,
    ) -> None:
        self.kind = kind
        # Every config this registry validated: the process collects its secrets from
        # them for the log redactor (a plugin's options may hold credentials).
        self.validated: list[BaseModel] = []
        self._injected: dict[str, type[Any]] = dict(inject or {})
        self._entry_points: dict[str, list[EntryPoint]] = {}
        if use_entry_points:
            for ep in entry_points(group=kind.group):
                self._entry_points.setdefault(ep.name, []).append(ep)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted({*self._injected, *self._entry_points})

    def load(self, name: str, where: str | None = None) -> type[P]:
        """The class registered as ``name``. :class:`PluginError` (prefixed with the key
        path ``where``) when it is unknown, ambiguous, broken or not of this kind."""
        prefix = f"{where}: " if where else ""
        kind = self.kind
        obj: object = self._injected.get(name)
        if obj is not None:
            origin = f"injected class {obj!r}"
        else:
            candidates = self._entry_points.get(name)
            if not candidates:
                raise PluginError(
                    f"{prefix}got {name!r}: expected a {kind.noun} type, one of: "
                    f"{', '.join(self.names()) or '(none installed)'} "
                    f"(entry points in group {kind.group})"
                )
            if len(candidates) > 1:
                claims = "; ".join(_origin(ep, kind.group) for ep in candidates)
                raise PluginError(
                    f"{prefix}{kind.noun} type {name!r} is registered more than once: {claims}"
                )
            ep = candidates[0]
            origin = _origin(ep, kind.group)
            try:
                obj = ep.load()
            except Exception as exc:  # any import-time failure of third-party code
                raise PluginError(
                    f"{prefix}{kind.noun} {name!r}: {origin} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        problem = self._shape_problem(obj)
        if problem:
            raise PluginError(f"{prefix}{kind.noun} {name!r} ({origin}) {problem}")
        return cast("type[P]", obj)

    def _shape_problem(self, obj: object) -> str | None:
        kind = self.kind
        if not inspect.isclass(obj):
            return f"is a {type(obj).__name__}, expected a {kind.noun} class"
        config = getattr(obj, "Config", None)
        if not (inspect.isclass(config) and issubclass(config, BaseModel)):
            return (
                f"is not a {kind.noun} class: {obj.__qualname__} has no pydantic 'Config' "
                "model (a class attribute subclassing pydantic.BaseModel)"
            )
        for method, is_async in {**kind.methods, **kind.optional_methods}.items():
            attr = getattr(obj, method, None)
            if attr is None and method in kind.optional_methods:
                continue
            if not callable(attr) or inspect.iscoroutinefunction(attr) != is_async:
                want = f"async def {method}()" if is_async else f"def {method}()"
                return f"is not a {kind.noun} class: {obj.__qualname__} lacks '{want}'"
        return None

    def build(
        self,
        name: str,
        options: Mapping[str, Any],
        at: Sequence[str | int],
        construct: Callable[[type[P], Any], P],
        *,
        secrets: Sequence[str] = (),
        config_dir: Path | None = None,
    ) -> P:
        """Load ``name``, validate ``options`` against its ``Config`` (errors name
        ``at`` + the key) and call ``construct(cls, config)``. A constructor's failure
        is a :class:`PluginError` naming ``at``, with ``secrets`` blanked out of it.
        ``config_dir`` is the directory of the file the options were written in: the
        plugin's ``ConfigPath`` options are taken from it when relative."""
        where = format_path(at)
        cls = self.load(name, f"{where}.type")
        config = validate(cls.Config, options, source=where, at=at, config_dir=config_dir)
        self.validated.append(config)
        try:
            return construct(cls, config)
        except ConfigError as exc:
            raise PluginError(f"{where}: {_blank(str(exc), secrets)}") from None
        except Exception as exc:
            text = _blank(f"{type(exc).__name__}: {exc}", secrets)
            raise PluginError(
                f"{where}: {self.kind.noun} {name!r} ({cls.__module__}.{cls.__qualname__}) "
                f"refused its config: {text}"
            ) from None


def _blank(text: str, secrets: Sequence[str]) -> str:
    """A plugin's message should not quote a secret; make sure of it."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text
