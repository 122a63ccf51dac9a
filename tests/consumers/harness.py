"""Running ``python -m consumers`` as a user would, for integration tests.

Every process started here is stopped by the fixture or context manager that started it;
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webhook_common.contract import EventMeta, format_time

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_until(
    check: Callable[[], Any], within: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


def write_config(path: Path, kafka_bootstrap: str, consumers: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump({"kafka": {"bootstrap_servers": kafka_bootstrap}, "consumers": consumers})
    )
    return path


class ConsumerProcess:
    """``python -m consumers run`` in a subprocess, logs to a file."""

    def __init__(self, config: Path, log: Path, *, group: str | None = None) -> None:
        self.config = config
        self.log = log
        self.group = group
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        args = [
            sys.executable,
            "-m",
            "consumers",
            "--log-format",
            "text",
            "run",
            "--config",
            str(self.config),
            "--admin-host",
            "127.0.0.1",
            "--admin-port",
            str(self.admin_port),
        ]
        if self.group:
            args += ["--group", self.group]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def wait_ready(self, within: float = 60) -> None:
        async with httpx.AsyncClient(timeout=2) as client:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"consumer exited ({self.proc.returncode}):\n{self.logs()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(self.url + "/readyz")).status_code == 200
                return False

            await wait_until(ready, within, "the consumer's /readyz")

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.url + "/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"consumer ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def consumers_running(*procs: ConsumerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop_quietly()


def meta(
    event_id: str,
    key: str,
    type_: str = "order.updated",
    when: float | None = None,
    headers: dict[str, str] | None = None,
) -> EventMeta:
    return EventMeta(
        id=event_id,
        source="crystallize",
        type=type_,
        time=format_time(time.time() if when is None else when),
        subject=key,
        http_headers=headers or {},
    )


async def produce(
    bootstrap: str,
    topic: str,
    events: Sequence[tuple[EventMeta, bytes]],
    *,
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Produce contract records (key = subject); returns (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value=body,
                key=m.subject.encode(),
                headers=m.to_headers(),
                partition=partition,
            )
            for m, body in events
        ]
        results = [await f for f in futures]
    finally:
        await producer.stop()
    return [(md.partition, md.offset) for md in results]


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic`` (partitions without one are absent)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


async def read_topic(bootstrap: str, topic: str, expect: int, within: float = 30) -> list[Any]:
    """Every record of a topic from the start (at least ``expect`` of them)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + within
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        # Anything more that is already there (to catch duplicates).
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            out.extend(records)
    finally:
        await consumer.stop()
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.strip()]


class TargetServer:
    """A real HTTP server on 127.0.0.1 that an ``http`` sink posts to (uvicorn in a thread
    with its own event loop, so slow answers do not cost a thread each).

    ``status`` is what it answers (200, 503, 400...), ``delay`` how long each request
    takes; ``received`` keeps (ce-id, ce-subject, body) of the accepted requests in the
    order they completed.
    """

    def __init__(self, port: int | None = None, *, status: int = 200, delay: float = 0.0) -> None:
        self.port = port or free_port()
        self.status = status
        self.delay = delay
        self.received: list[tuple[str, str, bytes]] = []
        self.requests = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.status
            self.requests += 1  # one event loop thread: no lock needed
            if 200 <= status < 300:
                h = request.headers
                self.received.append((h.get("ce-id", ""), h.get("ce-subject", ""), body))
            return Response(status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def start(self) -> TargetServer:
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            backlog=1024,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError(f"target server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None
