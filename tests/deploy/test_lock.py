"""requirements.lock, which the image installs from: every runtime dependency of
pyproject.toml pinned to a version its specifier allows, with hashes, nothing from the
dev extra, and the Dockerfile installing exactly it with hash checking on."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.dockerfile import parse
from tests.deploy.support import ROOT

LOCK = ROOT / "requirements.lock"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def pins() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, its hashes), from the lock's requirement lines."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    found: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        assert m is not None, f"not a pinned requirement: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        found[canonicalize_name(m["name"])] = (Version(m["version"]), hashes)
    return found


def project() -> tuple[list[str], list[str]]:
    """(what the image installs: [project] dependencies and the otel extra, so tracing
    is one OTEL_* variable away; the dev extra), as written."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = data["optional-dependencies"]
    return [*data["dependencies"], *extras["otel"]], list(extras["dev"])


def test_every_runtime_dependency_is_pinned_within_its_specifier() -> None:
    locked = pins()
    dependencies, _ = project()
    for text in dependencies:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: run `make lock`"
        version = locked[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {req.name}=={version}, outside {req.specifier}: "
            "run `make lock`"
        )


def test_every_pin_has_hashes_and_nothing_comes_from_the_dev_extra() -> None:
    locked = pins()
    for name, (_, hashes) in locked.items():
        assert hashes, f"{name} has no --hash in requirements.lock"
    dependencies, dev = project()
    runtime = {canonicalize_name(Requirement(t).name) for t in dependencies}
    for text in dev:
        name = canonicalize_name(Requirement(text).name)
        if name not in runtime:
            assert name not in locked, f"dev dependency {name} is in requirements.lock"
    # The lock installs on the image's Python without reaching for an index option.
    assert "--index-url" not in LOCK.read_text()
    assert "--find-links" not in LOCK.read_text()


def test_the_image_installs_the_lock_with_hashes_then_the_project_without_dependencies() -> None:
    _, stages = parse()
    build = stages[0]
    runs = build.all("RUN")
    lock_install = [i for i, r in enumerate(runs) if "-r requirements.lock" in r]
    project_install = [i for i, r in enumerate(runs) if "pip install --no-deps ." in r]
    assert len(lock_install) == 1, runs
    assert len(project_install) == 1, runs
    assert "pip install --require-hashes -r requirements.lock" in runs[lock_install[0]]
    assert lock_install[0] < project_install[0]
    copies = build.all("COPY")
    assert any(c.split()[0] == "requirements.lock" for c in copies), copies
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements.lock" in dockerignore


def test_make_lock_regenerates_it_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlock:", 1)[1].split("\n\n", 1)[0]
    assert "--generate-hashes" in recipe
    assert "requirements.lock" in recipe
    assert "pyproject.toml" in recipe
