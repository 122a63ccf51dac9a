"""Driving ``wrk`` (Debian's package) with ``bench/post.lua`` and reading its summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import BenchError

LUA = Path(__file__).with_name("post.lua")
_MARK = "BENCH_JSON "


def ensure_wrk() -> str:
    """The path of ``wrk``; installs Debian's package when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed: run `sudo apt-get install -y wrk`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


@dataclass(frozen=True, slots=True)
class WrkResult:
    duration_s: float
    requests: int
    statuses: dict[int, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9, mean, max

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    @property
    def rejected(self) -> int:
        """Answers other than 202, plus requests that got no answer (socket errors)."""
        other = sum(n for status, n in self.statuses.items() if status != 202)
        return other + sum(self.errors[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.duration_s if self.duration_s else 0.0


def parse(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith(_MARK):
            data: dict[str, Any] = json.loads(line[len(_MARK) :])
            break
    else:
        raise BenchError(f"wrk printed no {_MARK.strip()} line:\n{output[-2000:]}")
    latency = {k: v / 1000 for k, v in data["latency_us"].items()}
    return WrkResult(
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        statuses={int(k): v for k, v in data["statuses"].items()},
        errors=dict(data["errors"]),
        latency_ms=latency,
    )


def run(
    url: str,
    requests_file: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
) -> WrkResult:
    """One closed-loop wrk run: ``connections`` keep-alive connections, each sending its
    next request as soon as the previous one is answered."""
    argv = [
        ensure_wrk(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    env = {**os.environ, "BENCH_REQUESTS": str(requests_file), "BENCH_PATH": _path(url)}
    done = subprocess.run(  # noqa: S603 - argv built here
        argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[-1000:]}")
    return parse(done.stdout)


def _path(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
