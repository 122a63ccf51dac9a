"""Replay from the inspector page: ``python -m consumers replay`` for one recorded event.

A sink cannot reach the other sinks of its process (each is built and owned by the
engine), so the Replay button runs the supported path instead:
``python -m consumers replay --config C --offsets P:O-O --topic T --sinks S`` for the
event's Kafka coordinates. That reads the record's exact bytes back from Kafka, goes
through dedup (a sink that already has the event skips it; with the ``memory`` dedup
store the replay process cannot know, so it delivers) and retries, and prints the same
summary as on the command line, which the page shows.

``C`` is the file the consumer runs on, or the sink's ``replay_config``; the sinks the
button offers are the consumer's own (from the sink's context: no file is read here).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from consumers.sinks import SinkError

# The entry-point name of the inspector sink type. A replay process could not serve a
# second page on the port this one holds, so inspectors are never replay targets.
INSPECTOR_TYPE = "inspector"

Outcome = Literal["done", "error", "timeout"]


def replay_config_path(sink: str, configured: Path | None, running: Path | None) -> Path | None:
    """The config file replays run with, absolute; None when there is none to use.

    ``configured`` (the sink's ``replay_config``) wins; without it, ``running`` (the file
    the consumer runs on). A relative ``replay_config`` written in a config file was
    already taken from that file's directory when the sink's options were validated
    (``ConfigPath``); one set in code is taken from the working directory.
    """
    chosen = configured if configured is not None else running
    if chosen is None:
        return None
    resolved = chosen.resolve()
    if not resolved.is_file():
        shown = str(configured if configured is not None else chosen)
        raise SinkError(
            f"inspector sink {sink!r}: replay_config {shown!r} ({resolved}): no such file",
            retriable=False,
        )
    return resolved


def replay_targets(sink_types: Mapping[str, str]) -> list[str]:
    """The sinks the Replay button may deliver to: every configured one but inspectors."""
    return [name for name, type_name in sink_types.items() if type_name != INSPECTOR_TYPE]


def replay_argv(
    config: Path, record: Mapping[str, Any], sink: str, ignore_routes: bool
) -> list[str]:
    """The replay command for one recorded event (an argument list: no shell)."""
    kafka = record["kafka"]
    offset = kafka["offset"]
    argv = [
        sys.executable,
        "-m",
        "consumers",
        "--log-format",
        "text",
        "replay",
        "--config",
        str(config),
        "--offsets",
        f"{kafka['partition']}:{offset}-{offset}",
        "--topic",
        kafka["topic"],
        "--sinks",
        sink,
    ]
    if ignore_routes:
        argv.append("--ignore-routes")
    return argv


def shell_line(argv: Sequence[str]) -> str:
    """``argv`` as a user would type it (``python`` for the interpreter's full path)."""
    return " ".join(shlex.quote(a) for a in ["python", *argv[1:]])


@dataclass(frozen=True, slots=True)
class ReplayResult:
    outcome: Outcome
    exit_status: int | None
    output: str  # the summary line, or the error
    command: str  # the shell line of what ran


class ReplayLauncher:
    """Runs the replay command, one at a time, within a time limit."""

    def __init__(self, config: Path | None, targets: Sequence[str], timeout_seconds: float) -> None:
        self.config = config
        self.targets = list(targets)
        self.timeout_seconds = timeout_seconds
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.config is not None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def run(
        self, record: Mapping[str, Any], target: str, ignore_routes: bool
    ) -> ReplayResult:
        """Replay ``record`` to ``target``: the caller checked ``enabled`` and ``targets``."""
        if self.config is None:
            raise RuntimeError("replay is not enabled")
        argv = replay_argv(self.config, record, target, ignore_routes)
        async with self._lock:
            outcome, status, output = await self._run(argv)
        return ReplayResult(outcome, status, output, shell_line(argv))

    async def _run(self, argv: list[str]) -> tuple[Outcome, int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_seconds)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "timeout", None, ""
        stdout = out.decode("utf-8", "replace").strip()
        stderr = err.decode("utf-8", "replace").strip()
        if proc.returncode == 0:
            return "done", 0, stdout
        # The last stderr line is the command's one-line error (or the last log line).
        last = stderr.splitlines()[-1] if stderr else ""
        return "error", proc.returncode, stdout or last or f"exit status {proc.returncode}"
