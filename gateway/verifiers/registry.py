"""Verifier classes by name, and building a source's verifier from its config.

Verifiers are entry points in the group ``webhook_gateway.verifiers``; built-ins come
through the same group as third-party packages. Loading, the shape check, duplicate
names and option errors follow the rules every plugin kind shares
(:mod:`webhook_common.plugins`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gateway.verifiers import ENTRY_POINT_GROUP, Verifier
from webhook_common.plugins import PluginKind, Registry

__all__ = ["VERIFIERS", "VerifierRegistry"]

VERIFIERS = PluginKind(
    noun="verifier",
    group=ENTRY_POINT_GROUP,
    methods={"verify": False},
    optional_methods={"sign": False},
)


class VerifierRegistry(Registry[Verifier]):
    """The installed verifier types (plus ``inject``-ed classes, for tests)."""

    def __init__(
        self, inject: Mapping[str, type[Any]] | None = None, *, use_entry_points: bool = True
    ) -> None:
        super().__init__(VERIFIERS, inject, use_entry_points=use_entry_points)

    def build_verifier(
        self,
        index: int,
        type_name: str,
        options: Mapping[str, Any],
        secrets: Sequence[SecretStr],
        *,
        config_dir: Path | None = None,
    ) -> Verifier:
        """The verifier of ``sources[index]``; errors name ``sources[index].verifier``.
        ``config_dir``: where relative ``ConfigPath`` options are taken from."""
        return self.build(
            type_name,
            options,
            ("sources", index, "verifier"),
            lambda cls, config: cls(config, secrets),
            secrets=[s.get_secret_value() for s in secrets],
            config_dir=config_dir,
        )
