"""Processes a scenario starts: gateway, consumers, private Kafka/Redis instances.

Every process is stopped by the scenario that started it (``Stack.close``); every wait
is bounded. Logs of every process go to files under the run directory, so a failed
scenario can be read afterwards (and so the secrets test can search all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]


class FaultError(Exception):
    """A scenario could not be run (a process did not start, a wait timed out)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(
    check: Callable[[], Any],
    within: float,
    what: str,
    interval: float = 0.2,
    error: type[Exception] = FaultError,
) -> Any:
    """Poll ``check`` (sync or async) until truthy; ``error`` after ``within`` seconds
    (tests pass ``AssertionError``)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise error(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


class Proc:
    """A Python subprocess of this project with its output in ``log``."""

    what = "process"  # in error messages
    admin_port: int  # its /readyz and /metrics (set by the subclass, which builds ``args``)

    def __init__(self, args: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 (our own CLI, fixed arguments)
                [sys.executable, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def wait(self, within: float) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), within)
        except TimeoutError:
            raise FaultError(f"{self.args[1]} did not exit within {within:g} s") from None

    async def stop(self, within: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``within`` seconds."""
        if self.proc is None:
            return None
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return await self.wait(within)
            except FaultError:
                self.proc.kill()
        return await self.wait(10)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def wait_ready(self, within: float = 60.0) -> None:
        """Until the admin port's ``/readyz`` answers 200; :class:`FaultError` if the
        process exits first or ``within`` passes."""
        async with httpx.AsyncClient(timeout=2) as client:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise FaultError(
                        f"{self.what} exited early ({self.proc.returncode}):\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(self.admin_url + "/readyz")).status_code == 200
                return False

            await wait_for(ready, within, f"the {self.what}'s /readyz")


class Gateway(Proc):
    what = "gateway"

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        super().__init__(
            [
                *("-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1"),
                *("--port", str(self.port), "--admin-port", str(self.admin_port)),
            ],
            log,
            env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Consumer(Proc):
    what = "consumer"

    def __init__(
        self,
        config: Path,
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        group: str | None = None,
    ) -> None:
        self.admin_port = free_port()
        super().__init__(
            [
                *("-m", "consumers", "--log-format", "text", "run", "--config", str(config)),
                *("--admin-host", "127.0.0.1", "--admin-port", str(self.admin_port)),
                *(("--group", group) if group else ()),
            ],
            log,
            env,
        )


async def run_cli(
    args: list[str], log: Path, env: Mapping[str, str], within: float = 120.0
) -> tuple[int, str]:
    """Run ``python ARGS`` to completion; (exit status, stdout)."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **env},
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise FaultError(f"`python {' '.join(args)}` did not finish in {within:g} s") from None
    return proc.returncode or 0, out.decode(errors="replace")


class LocalService:
    """A private Kafka or Redis from ``deploy/local/<name>.sh`` on its own port and
    state directory, so stopping it never touches the shared services."""

    def __init__(
        self, name: str, port: int, state_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.state_dir = state_dir
        self.env = dict(env or {})  # for the script: KAFKA_SASL_SSL_PORT, ...
        self.log = state_dir / f"{name}-script.log"

    async def _script(self, action: str, within: float = 150.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            f"{self.name.upper()}_PORT": str(self.port),
            "WG_STATE_DIR": str(self.state_dir),
            "WG_CACHE_DIR": os.environ.get("WG_CACHE_DIR", str(ROOT / ".cache")),
            **self.env,
        }
        with self.log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                str(ROOT / "deploy" / "local" / f"{self.name}.sh"),
                action,
                env=env,
                stdout=out,
                stderr=out,
            )
            try:
                code = await asyncio.wait_for(proc.wait(), within)
            except TimeoutError:
                proc.kill()
                raise FaultError(f"{self.name}.sh {action} took over {within:g} s") from None
        if code != 0:
            raise FaultError(f"{self.name}.sh {action} failed ({code}); see {self.log}")

    async def up(self) -> None:
        await self._script("up")

    async def down(self) -> None:
        await self._script("down")
