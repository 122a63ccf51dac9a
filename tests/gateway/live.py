"""A real uvicorn server running the webhook port in a thread, for tests that talk raw
bytes over a socket (fuzzing, slow clients, size limits).

It uses the same uvicorn settings and connection guard as ``gateway serve`` and the
real Crystallize verifier; only the Kafka producer is a fake.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from faults.target import ServerThread
from gateway import config as gwconfig
from gateway.app import Ingress, IngressState, create_app
from gateway.metrics import IngressMetrics
from gateway.server import _web_options
from gateway.sources import build_sources
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.support import FakeProducer

SECRET = "live-test-secret-3f9a"
PATH = "/webhooks/crystallize"


class LiveServer:
    def __init__(self, gateway: dict[str, Any], source: dict[str, Any]) -> None:
        cfg = gwconfig.parse_config(
            {
                "gateway": gateway,
                "sources": [
                    {
                        "name": "crystallize",
                        "path": PATH,
                        "verifier": {"type": "crystallize", "mode": "auto"},
                        "secrets": [SECRET],
                        **source,
                    }
                ],
            }
        )
        self.registry = CollectorRegistry()
        self.producer = FakeProducer()
        self.ingress = Ingress(
            build_sources(cfg, VerifierRegistry()),
            self.producer,
            IngressMetrics(self.registry),
            cfg.gateway,
            IngressState(),
        )
        self.options = _web_options(self.ingress, cfg.gateway.http)
        self.bytes_received = 0
        self.port = 0
        self._server: ServerThread | None = None

    def _counting_protocol(self) -> type[Any]:
        """The guarded protocol, also counting every byte the server read (test hook)."""
        base: type[Any] = self.options["http"]
        live = self

        class Counting(base):  # type: ignore[misc]
            def data_received(self, data: bytes) -> None:
                live.bytes_received += len(data)
                super().data_received(data)

        return Counting

    def start(self) -> LiveServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.ingress),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            loop="asyncio",
            **{**self.options, "http": self._counting_protocol()},
        )
        self._server = ServerThread(config, "live server")
        self._server.start(sockets=[sock])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def alive(self) -> bool:
        return self._server is not None and self._server.alive

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def wait_metric(self, expected: float, name: str, **labels: str) -> float:
        """The metric once it equals ``expected``, or after 5 s whatever it is: the
        server thread may count a request just after the client read the answer."""
        deadline = time.monotonic() + 5
        while (value := self.metric(name, **labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return value

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


@contextmanager
def live_server(
    gateway: dict[str, Any] | None = None, source: dict[str, Any] | None = None
) -> Iterator[LiveServer]:
    server = LiveServer(gateway or {}, source or {}).start()
    try:
        yield server
    finally:
        server.stop()


def read_response(sock: socket.socket, within: float = 5.0) -> bytes:
    """Everything the server sends until it closes, or the head plus
    ``content-length`` bytes of body, or what arrived within ``within`` seconds."""
    sock.settimeout(within)
    data = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data
    return data


def status_of(response: bytes) -> int | None:
    """The status code of a raw response, or None when there was none."""
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])
