"""The plugin API table in docs/plugins.md is what the modules export."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
ROW = re.compile(r"^\| `(?P<module>[a-z_.]+)` \| (?P<names>`[^|]+`) \|$", re.MULTILINE)


def documented() -> dict[str, set[str]]:
    section = DOC.read_text().split("## What a plugin may import", 1)[1].split("\n## ", 1)[0]
    return {
        m["module"]: set(re.findall(r"`([A-Za-z_]+)`", m["names"])) for m in ROW.finditer(section)
    }


def test_the_table_lists_the_plugin_modules() -> None:
    assert set(documented()) == {
        "consumers.sinks",
        "consumers.event",
        "consumers.testing",
        "gateway.verifiers",
    }


def test_each_module_exports_exactly_the_documented_names() -> None:
    for module_name, names in documented().items():
        module = importlib.import_module(module_name)
        exported = set(module.__all__)
        assert exported == names, (
            f"{module_name}: __all__ {sorted(exported)} != doc {sorted(names)}"
        )
        missing = [n for n in exported if not hasattr(module, n)]
        assert not missing, f"{module_name}: __all__ names {missing} are not defined"
