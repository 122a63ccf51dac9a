"""A real HTTP server on 127.0.0.1 that records what it receives: the HTTP sink's target.

It runs uvicorn in its own thread and event loop, so the sink under test talks to it
over a real socket and a slow answer does not block the test's loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
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


class RawServer:
    """A TCP server on 127.0.0.1 that reads each request (head and ``Content-Length``
    body) and answers with whatever ``answer`` writes to the socket, byte by byte if it
    likes: for answers no HTTP framework would give (a head that never ends, a body
    that never ends). ``sent`` counts the bytes written over all connections."""

    def __init__(self, answer: Callable[[socket.socket, RawServer], None]) -> None:
        self._answer = answer
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self.sent = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> RawServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(10)
        self._sock.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def _accept(self) -> None:
        # Closing a listening socket does not wake a thread blocked in accept(): poll.
        self._sock.settimeout(0.05)
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                with self._lock:
                    self.requests += 1
                self._answer(conn, self)
            except OSError:
                return  # the client went away: what the tests want it to do


def dripping_head(every: float = 0.05) -> Callable[[socket.socket, RawServer], None]:
    """An answer whose head never ends: a status line, then one header line every
    ``every`` seconds, each well within any per-read timeout."""

    def answer(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not server.stopped:
            conn.sendall(b"X-Drip: 1\r\n")
            server.count(11)
            time.sleep(every)

    return answer


def endless_body(status: int = 200) -> Callable[[socket.socket, RawServer], None]:
    """An answer with ``status`` and a chunked body that never ends."""

    def answer(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(f"HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\n\r\n".encode())
        chunk = b"10000\r\n" + b"y" * 0x10000 + b"\r\n"
        while not server.stopped:
            conn.sendall(chunk)
            server.count(len(chunk))

    return answer
