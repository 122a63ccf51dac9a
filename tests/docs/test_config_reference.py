"""The configuration reference stays true: every key the models accept is documented.

Walks the pydantic models both processes validate the shared YAML file with (and every
built-in verifier's and sink's ``Config``) and looks for each key path in the docs. A new
setting without documentation fails here, as does a documented key that was renamed.
"""

from __future__ import annotations

import re
import types
import typing
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pydantic import BaseModel

from consumers.config import ConsumerConfig
from consumers.sinks import ENTRY_POINT_GROUP as SINK_GROUP
from gateway.config import GatewayConfig
from gateway.verifiers import ENTRY_POINT_GROUP as VERIFIER_GROUP

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
        return found
    return []


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        origin = typing.get_origin(field.annotation)
        args = typing.get_args(field.annotation)
        is_list = origin is list or any(typing.get_origin(a) is list for a in args)
        for sub in _models_in(field.annotation):
            paths.extend(key_paths(sub, f"{path}[]." if is_list else f"{path}."))
    return paths


def documented(doc: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z0-9_.\[\]]+)`", doc))


def missing(paths: list[str], doc: str) -> list[str]:
    names = documented(doc)
    return sorted({p for p in paths if p not in names})


def test_every_shared_config_key_is_in_the_reference() -> None:
    doc = (DOCS / "configuration.md").read_text()
    paths = key_paths(GatewayConfig) + key_paths(ConsumerConfig)
    assert missing(paths, doc) == []


@pytest.mark.parametrize(
    ("group", "doc_name"), [(VERIFIER_GROUP, "verifiers.md"), (SINK_GROUP, "plugins.md")]
)
def test_every_builtin_plugin_option_is_documented(group: str, doc_name: str) -> None:
    doc = (DOCS / doc_name).read_text()
    gaps = {}
    for ep in entry_points(group=group):
        if not ep.value.startswith(("gateway.", "consumers.")):
            continue  # third-party plugins document themselves
        config = ep.load().Config
        absent = missing(key_paths(config), doc)
        if absent:
            gaps[ep.name] = absent
    assert gaps == {}


def test_walker_finds_nested_keys() -> None:
    paths = key_paths(GatewayConfig)
    assert "gateway.producer.ack_timeout_seconds" in paths
    assert "sources[].verifier.type" in paths
    assert "sources[].key.pointers" in paths
