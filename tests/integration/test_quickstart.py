"""The quick start as docs/quickstart.md writes it: ``make run``, then the commands it
prints, typed into another shell; the event reaches the JSONL file (and the inspector);
Ctrl-C stops everything ``make run`` started.

Only ports, the events file and the development secret file are moved (to free ports
and a temp dir) so the test does not collide with a developer's own ``make run``; the
config, the topics and the consumer group are the quick start's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.gateway.support import free_port
from webhook_common.contract import parse_time

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "quickstart.md"


class Terminal:
    """A command in its own session, as in a terminal: Ctrl-C is SIGINT to the group."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # A terminal's foreground job has SIGINT at its default; pytest may have been
            # started with it ignored (a background job), which children would inherit.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.session = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        while text not in self.output:
            if self.proc.poll() is not None:
                self._reader.join(5)
                if text in self.output:
                    return
                raise AssertionError(f"exited ({self.proc.returncode}) before {text!r}:\n"
                                     f"{self.output}")  # fmt: skip
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {within:g} s:\n{self.output}")
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        os.killpg(self.session, signal.SIGINT)

    def force_stop(self) -> None:
        """Teardown after a failure: nothing of the session survives (but the broker)."""
        broker = kafka_broker_pid()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [pid for pid in session_processes(self.session) if pid != broker]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(3)

    def close(self) -> None:
        self.force_stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def session_processes(session: int) -> list[int]:
    """Live processes of a session (zombies are gone for all purposes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may contain spaces, so split after ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kafka_broker_pid() -> int | None:
    """The local broker's pid when deploy/local/kafka.sh runs it: `make run` starts it when
    it is not running and deliberately leaves it running (`make kafka-down` stops it)."""
    pidfile = ROOT / "var" / "local" / f"kafka-{os.environ.get('KAFKA_PORT', '9092')}" / "kafka.pid"
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as servers bind: only a live listener (not TIME_WAIT) blocks it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def next_steps(output: str) -> list[str]:
    """The commands `make run` prints under "Next, in another terminal"."""
    block = output.split("Next, in another terminal", 1)[1].split("Ctrl-C here", 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.strip()]


@pytest.fixture
def environment(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CRYSTALLIZE_SIGNATURE_SECRET"}
    env.update(
        GATEWAY_PORT=str(free_port()),
        GATEWAY_ADMIN_PORT=str(free_port()),
        CONSUMER_ADMIN_PORT=str(free_port()),
        INSPECTOR_PORT=str(free_port()),
        EVENTS_FILE=str(tmp_path / "events.jsonl"),
        DEV_SECRET_FILE=str(tmp_path / "dev-secret"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("MAKEFLAGS", None)
    if kafka_bootstrap != f"127.0.0.1:{env.get('KAFKA_PORT', '9092')}":
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap  # not the local script's broker
    else:
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # exactly as typed: make run starts/finds it
    return env


def test_make_run_send_see_event_ctrl_c(environment: dict[str, str], tmp_path: Path) -> None:
    started_at = datetime.now(UTC)
    run = Terminal(["make", "run"], environment)
    try:
        run.wait_for("Ctrl-C here stops", within=180)

        # The generated development secret is printed once, when it is made.
        secret = Path(environment["DEV_SECRET_FILE"]).read_text().strip()
        assert len(secret) >= 32
        assert run.output.count(secret) == 1

        steps = next_steps(run.output)
        assert len(steps) == 3, steps
        export, send, tail = steps
        assert (
            export
            == f'export CRYSTALLIZE_SIGNATURE_SECRET="$(cat {environment["DEV_SECRET_FILE"]})"'
        )
        # The walkthrough shows the same commands (with the default port and paths).
        docs = DOCS.read_text()
        assert "make run" in docs
        assert 'export CRYSTALLIZE_SIGNATURE_SECRET="$(cat var/dev-secret)"' in docs
        assert send.split(" --url ")[0] in docs
        assert "tail -n 1 var/events.jsonl" in docs

        # The other terminal: the printed lines, as typed.
        other = subprocess.run(
            ["bash", "-c", f"{export}\n{send}"],
            cwd=ROOT,
            env={k: v for k, v in environment.items() if k != "CRYSTALLIZE_SIGNATURE_SECRET"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert other.returncode == 0, other.stdout + other.stderr
        match = re.match(r"202  id=([0-9a-f]{64})  [0-9.]+ ms$", other.stdout.strip())
        assert match is not None, other.stdout
        event_id = match.group(1)

        events = Path(environment["EVENTS_FILE"])
        deadline = time.monotonic() + 60
        line: dict[str, object] | None = None
        while line is None:
            if events.exists():
                for text in events.read_text().splitlines():
                    doc = json.loads(text)
                    if doc["id"] == event_id and parse_time(str(doc["time"])) >= started_at:
                        line = doc
            assert time.monotonic() < deadline, f"{event_id} not in {events}:\n{run.output}"
            time.sleep(0.2)
        assert line["source"] == "crystallize"
        assert line["key"] == "68e4fe1da9733a66efd88673"
        assert line["type"] == "order"
        shown = subprocess.run(
            ["bash", "-c", tail], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
        assert shown.stdout.startswith("{")

        # The quick start's inspector has it too.
        inspector = f"http://127.0.0.1:{environment['INSPECTOR_PORT']}/api/events"
        listed = httpx.get(inspector, params={"source": "crystallize"}, timeout=10).json()
        assert event_id in [e["id"] for e in listed]

        run.ctrl_c()
        # make dies of the SIGINT itself (-2) once run.sh has stopped its children.
        assert run.proc.wait(90) in (-signal.SIGINT, 2, 130)
        run.wait_for("run.sh: stopped", within=5)
        broker = kafka_broker_pid()
        left = [pid for pid in session_processes(run.session) if pid != broker]
        assert left == [], f"left behind: {left}\n{run.output}"
        for name in ("GATEWAY_PORT", "GATEWAY_ADMIN_PORT", "CONSUMER_ADMIN_PORT", "INSPECTOR_PORT"):
            assert port_is_free(int(environment[name])), name
    finally:
        run.close()
