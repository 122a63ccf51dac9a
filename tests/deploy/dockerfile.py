"""The project's Dockerfile, read as Docker reads it: global ``ARG`` defaults, stages and
their instructions; for the tests that check it and the test that runs the image."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from tests.deploy.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """Every ``ENV KEY=VALUE`` of the stage (later ones win; ``$VAR`` left as is)."""
        found: dict[str, str] = {}
        for arg in self.all("ENV"):
            for word in shlex.split(arg):
                key, _, value = word.partition("=")
                found[key] = value
        return found


def parse() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list), f"expected the exec (JSON) form, got {arg}"
    return [str(v) for v in value]


def documented_runs() -> list[list[str]]:
    """The ``docker run ... IMAGE command`` examples of the header comment, as argument
    lists from ``IMAGE`` on (continuation lines joined)."""
    lines = []
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].split("  # ", 1)[0].strip())
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    runs = []
    for line in text.splitlines():
        if line.startswith("docker run ") and " IMAGE" in line:
            words = shlex.split(line)
            runs.append(words[2:])
    return runs
