"""The files a distribution and its users rely on exist and agree with pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_license_file_is_the_license_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_security_policy_and_changelog_exist() -> None:
    assert "Reporting a vulnerability" in (ROOT / "SECURITY.md").read_text()
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
