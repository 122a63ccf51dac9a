"""py-spy profiles of a server under wrk load: a flame graph and a text summary.

Two recordings of the same load: an SVG flame graph for people, and collapsed stacks
("raw") from which the functions with the most own and inclusive CPU samples are
listed, so the docs can say what bounds throughput.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import wrk
from bench.procs import REPO, BenchError

if TYPE_CHECKING:
    from bench.ingress import IngressPlan

_MAX_DOCS_SVG = 1024 * 1024
# Frames on the way to the event loop, in nearly every stack: not worth listing.
_TRUNK = re.compile(
    r"<frozen runpy>|__main__\.py\)|asyncio/runners\.py|"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once) "
)
_LINE = re.compile(r"^(.*) (\d+)$")


def py_spy() -> str:
    """The py-spy binary next to the interpreter (``pip install py-spy``), or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found:
        return found
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "py-spy"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not local.exists():
        raise BenchError(f"py-spy is not installed and pip failed: {done.stderr[-500:]}")
    return str(local)


def start(pid: int, seconds: float, fmt: str, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` (``fmt``: flamegraph or raw)."""
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", "200", "--nonblocking", "--format", fmt, "--output", str(out)]
    if fmt == "raw":  # full paths tell whose code a frame is (see _package)
        argv.append("--full-filenames")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603


def finish(spy: subprocess.Popen[bytes], out: Path, timeout: float) -> None:
    output, _ = spy.communicate(timeout=timeout)
    if spy.returncode != 0 or not out.exists():
        raise BenchError(
            f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-800:]}"
        )


def _record(pid: int, seconds: float, fmt: str, out: Path, load: threading.Thread) -> None:
    spy = start(pid, seconds, fmt, out)
    load.start()
    try:
        finish(spy, out, seconds + 60)
    finally:
        load.join()


def _frame(raw: str) -> str:
    """``function (path/to/module.py:123)`` → ``function (module.py)``."""
    match = re.match(r"^(.*) \((.*?):\d+\)$", raw)
    if not match:
        return raw
    name, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def _package(raw: str) -> str:
    """Who owns a frame: a site-packages distribution, a stdlib module, or a folder of
    this repository. Native code (uvloop, httptools, hashlib) has no frame of its own: its
    time shows up in the Python function that called it."""
    match = re.match(r"^.* \((.*?)(?::\d+)?\)$", raw)
    path = match.group(1) if match else raw
    parts = Path(path).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else marker
    for i, part in enumerate(parts):
        if part.startswith("python3") and i + 1 < len(parts):
            return "stdlib " + parts[i + 1].removesuffix(".py")
    if path.startswith("<frozen"):
        return "stdlib " + path.strip("<>").split()[-1]
    try:
        return Path(path).relative_to(REPO).parts[0]
    except (ValueError, IndexError):
        return parts[-2] if len(parts) > 1 else path


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        stack, count = match.group(1), int(match.group(2))
        raw_frames = stack.split(";")
        frames = [_frame(f) for f in raw_frames]
        total += count
        own[frames[-1]] += count
        packages[_package(raw_frames[-1])] += count
        for f in set(frames):
            inclusive[f] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "samples": n, "percent": round(100 * n / total, 1)}
            for f, n in counter.most_common()
            if counter is not inclusive or not _TRUNK.search(f)
        ][:top]

    return {
        "samples": total,
        "own": share(own),
        "inclusive": share(inclusive),
        "packages": share(packages),
    }


def record(
    name: str,
    pid: int,
    url: str,
    requests_file: Path,
    plan: IngressPlan,
    workdir: Path,
    docs_dir: Path | None,
) -> dict[str, Any]:
    seconds = plan.profile_seconds
    conns = plan.workers_connections

    def load() -> threading.Thread:
        return threading.Thread(
            target=wrk.run,
            args=(url, requests_file),
            kwargs={"connections": conns, "duration": seconds + 1},
        )

    svg = workdir / f"bench-flamegraph-{name}.svg"
    raw = workdir / f"profile-{name}.collapsed.txt"
    _record(pid, seconds, "flamegraph", svg, load())
    _record(pid, seconds, "raw", raw, load())
    result: dict[str, Any] = {
        "connections": conns,
        "seconds": seconds,
        "svg": str(svg),
        **summarise(raw.read_text()),
    }
    if docs_dir is not None and svg.stat().st_size <= _MAX_DOCS_SVG:
        docs_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(svg, docs_dir / svg.name)
        result["svg"] = str(docs_dir / svg.name)
    with contextlib.suppress(ValueError):  # shown relative to the repository when inside it
        result["svg"] = str(Path(result["svg"]).resolve().relative_to(REPO))
    return result
