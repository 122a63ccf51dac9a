"""The HTTP server shell every port of the product runs on: uvicorn, owned by its process.

uvicorn installs its own SIGTERM/SIGINT handlers and runs the lifespan protocol; here the
process owns both (each ``__main__`` decides the shutdown order: readiness off, drain,
flush, then the admin port last), so :class:`Server` turns uvicorn's signal capture off
and reports when it listens. :func:`bind` opens the socket before anything else starts,
so a busy port is one clear error instead of a half-started process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from webhook_common.errors import StartupError

__all__ = ["Server", "bind", "make_server"]


class Server(uvicorn.Server):
    """uvicorn without its own signal handling; ``listening`` is set once it serves."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: Any, **options: Any) -> Server:
    """A :class:`Server` for ``app``: no lifespan, no access log, no ``Server`` header,
    logging left to the process's own set-up. ``options`` are uvicorn's (host, port, ...)."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        **options,
    )
    return Server(config)


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening, non-blocking socket, or :class:`StartupError` naming the address.

    ``reuse_port``: join other processes on the port (``SO_REUSEPORT``): the kernel then
    spreads new connections evenly over their sockets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock
