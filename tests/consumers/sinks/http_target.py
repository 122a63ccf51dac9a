"""A real HTTP server on 127.0.0.1 that records what it receives: the HTTP sink's target.

It runs uvicorn in its own thread and event loop, so the sink under test talks to it
over a real socket and a slow answer does not block the test's loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes


class Target:
    """ASGI app: records each request, answers with scripted statuses (default 204)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: deque[int] = deque()
        self.delay = 0.0
        self._lock = threading.Lock()
        self.url = ""

    def answer(self, *statuses: int) -> None:
        with self._lock:
            self.statuses.extend(statuses)

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.delay:
            await asyncio.sleep(self.delay)
        raw = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
        headers: dict[str, str] = {}
        for k, v in raw:
            name, value = k.decode("latin-1").lower(), v.decode("utf-8")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        with self._lock:
            status = self.statuses.popleft() if self.statuses else 204
            self.received.append(Received(scope["method"], scope["path"], headers, raw, body))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def serve(target: Target) -> Iterator[Target]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        target, lifespan="off", log_level="warning", ws="none", http="h11", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started:
                break
            thread.join(0.01)
        assert server.started, "the target server did not start within 10 s"
        target.url = f"http://127.0.0.1:{port}"
        yield target
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
