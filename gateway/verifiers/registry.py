"""Finding verifier classes by name and building them from a source's config.

Verifiers are classes registered under the entry-point group
``webhook_gateway.verifiers``; built-ins come through the same group as third-party
packages. Only the classes a config names are imported, so a broken plugin that is
not used cannot stop the gateway. Tests inject classes directly with ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from gateway.verifiers import ENTRY_POINT_GROUP, Verifier
from webhook_common.config import REDACTED, format_path, is_secret_key
from webhook_common.errors import ConfigError


def _distribution(ep: EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return "an unknown distribution"
    return f"distribution {dist.name} {dist.version}"


def _show(value: Any, path: Sequence[str | int]) -> str:
    if is_secret_key(path) or isinstance(value, SecretStr):
        return REDACTED
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def option_errors(
    exc: ValidationError, options: Mapping[str, Any], prefix: Sequence[str | int]
) -> list[str]:
    """One ``key.path: got value: expected ...`` line per pydantic error, with the key
    path as the user wrote it (``sources[0].verifier.mode``)."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [seg for seg in err["loc"] if isinstance(seg, str | int)]
        cur: Any = options
        found = True
        for seg in loc:
            try:
                cur = cur[seg]
            except (KeyError, IndexError, TypeError):
                found = False
                break
        path = [*prefix, *loc]
        got = f"got {_show(cur, path)}" if found else "missing"
        expected = err["msg"]
        if err["type"] == "extra_forbidden":
            expected = "no such key (check spelling)"
        lines.append(f"{format_path(path)}: {got}: expected {expected[0].lower()}{expected[1:]}")
    return lines


class VerifierRegistry:
    """Verifier classes by name: injected ones first, then entry points."""

    def __init__(
        self,
        extra: Mapping[str, type[Any]] | None = None,
        *,
        group: str = ENTRY_POINT_GROUP,
        use_entry_points: bool = True,
    ) -> None:
        self._group = group
        self._extra: dict[str, type[Any]] = dict(extra or {})
        self._entry_points: dict[str, EntryPoint] = (
            {ep.name: ep for ep in entry_points(group=group)} if use_entry_points else {}
        )

    def names(self) -> list[str]:
        return sorted({*self._extra, *self._entry_points})

    def load(self, name: str, where: str = "verifier.type") -> type[Verifier]:
        """The class registered as ``name``; :class:`ConfigError` naming ``where``,
        the entry point and its distribution when it is unknown or broken."""
        cls = self._extra.get(name)
        if cls is None:
            ep = self._entry_points.get(name)
            if ep is None:
                raise ConfigError(
                    f"{where}: got {name!r}: expected one of {', '.join(self.names()) or '(none)'}"
                    f" (entry points in group {self._group!r})"
                )
            try:
                cls = ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"{where}: verifier {name!r}: entry point {ep.value!r} from "
                    f"{_distribution(ep)} cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
            origin = f"entry point {ep.value!r} from {_distribution(ep)}"
        else:
            origin = f"injected class {cls!r}"
        config = getattr(cls, "Config", None)
        if not (
            isinstance(cls, type)
            and isinstance(config, type)
            and issubclass(config, BaseModel)
            and callable(getattr(cls, "verify", None))
        ):
            raise ConfigError(
                f"{where}: verifier {name!r} ({origin}) is not a verifier class: expected a "
                "class with a pydantic `Config` model and a `verify` method"
            )
        return cls

    def build(
        self,
        index: int,
        type_name: str,
        options: Mapping[str, Any],
        secrets: Sequence[SecretStr],
    ) -> Verifier:
        """Validate ``options`` against the class's ``Config`` and build the verifier
        of ``sources[index]``. Errors name ``sources[index].verifier.<key>``."""
        prefix: tuple[str | int, ...] = ("sources", index, "verifier")
        cls = self.load(type_name, f"{format_path(prefix)}.type")
        try:
            config = cls.Config.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigError("\n  ".join(option_errors(exc, options, prefix))) from None
        try:
            return cls(config, secrets)
        except Exception as exc:
            # A verifier's message should not quote a secret; make sure of it.
            text = str(exc)
            for secret in secrets:
                value = secret.get_secret_value()
                if value:
                    text = text.replace(value, REDACTED)
            if not isinstance(exc, ConfigError):
                text = f"verifier {type_name!r} refused its config: {type(exc).__name__}: {text}"
            raise ConfigError(f"{format_path(prefix)}: {text}") from None
