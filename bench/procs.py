"""Processes under test: start, wait until they answer, read their CPU time, stop.

Every server runs in its own process group on a free loopback port; CPU time is the
sum of ``utime + stime`` over the process and its descendants (the workers of
``gateway serve --workers`` and of uvicorn ``--workers``, with their supervisor), read
from ``/proc`` before and after each measured interval.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.apps.slow_sink import ENTRY_POINT

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The harness cannot measure something (a process did not start, a tool is missing)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (``serve --workers N``
    puts worker i's admin port on ``admin_port + i``)."""
    for _ in range(100):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        try:
            for port in range(first + 1, first + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise BenchError(f"no {count} consecutive free ports found")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of one process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing paren.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _tree(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and each of its descendants, by pid."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                parents[int(entry)], cpu[int(entry)] = info
    out = {}
    for pid, seconds in cpu.items():
        node = pid
        while node > 1:
            if node == root:
                out[pid] = seconds
                break
            node = parents.get(node, 0)
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and all its descendants."""
    return sum(_tree(root).values())


def _status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_bytes(root: int) -> tuple[int, int]:
    """(resident now, sum of each process's peak resident) of ``root`` and its
    descendants, in bytes: what a pod's memory limit must hold."""
    pids = list(_tree(root))
    now = sum(_status_kib(pid, "VmRSS") for pid in pids)
    peak = sum(_status_kib(pid, "VmHWM") for pid in pids)
    return now * 1024, peak * 1024


def find_pid(needle: str) -> int | None:
    """The first process whose command line contains ``needle`` (e.g. the Kafka broker's
    main class), to account for its CPU too; None when there is none."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in cmdline and int(entry) != os.getpid():
                return int(entry)
    return None


def plugin_path(directory: Path) -> Path:
    """A directory that, on ``PYTHONPATH``, registers the benchmark's slow sink as an
    entry point (importlib.metadata finds any ``.dist-info`` on ``sys.path``)."""
    info = directory / "webhook_gateway_bench-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: webhook-gateway-bench\nVersion: 0.0.0\n"
    )
    (info / "entry_points.txt").write_text(f"[webhook_gateway.sinks]\n{ENTRY_POINT}\n")
    return directory


@dataclass
class Process:
    """One command under test, its output captured to a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (self.env.get("PYTHONPATH", ""), str(REPO)) if p
        )
        self.popen = subprocess.Popen(  # noqa: S603 - argv built by the harness
            list(self.argv),
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise BenchError(f"{self.name}: not started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> tuple[int, int]:
        return tree_rss_bytes(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            code = self.popen.returncode if self.popen else None
            raise BenchError(
                f"{self.name} exited (status {code}); last log lines:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it if it has not exited after ``timeout``."""
        popen, self.popen = self.popen, None
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


def python(*args: str) -> list[str]:
    """A command line running the project's interpreter (the one running the harness)."""
    return [sys.executable, *args]


def wait_port(port: int, process: Process, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{process.name}: nothing listens on port {port} after {timeout:g} s")
