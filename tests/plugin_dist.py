"""Making a plugin project "installed" without pip, the way an installer lays it out.

An installed distribution is, to :mod:`importlib.metadata`, a ``<name>-<version>.dist-info``
directory with ``METADATA`` and ``entry_points.txt`` on ``sys.path``. Writing one from a
project's own ``pyproject.toml``, next to its sources, lets tests load a plugin through
its real entry-point declaration in this process or a fresh interpreter, with nothing
installed into the virtualenv while the tests run.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path


def write_dist_info(
    into: Path, name: str, version: str, entry_points: Mapping[str, Mapping[str, str]]
) -> Path:
    """A ``.dist-info`` in ``into`` declaring ``entry_points`` (group -> name -> target)."""
    info = into / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    with (info / "entry_points.txt").open("a") as out:
        for group, targets in entry_points.items():
            out.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in targets.items()))
    return info


def lay_out_project(project: Path, into: Path) -> list[Path]:
    """Lay out the plugin project at ``project`` (pyproject.toml + ``src/``) as installed:
    returns the ``sys.path`` entries to add (the dist-info's directory, the sources)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    write_dist_info(into, meta["name"], meta["version"], meta["entry-points"])
    return [into, project / "src"]
