"""HTTP servers on 127.0.0.1 in a thread: :class:`ServerThread` runs any uvicorn app
(the fault runner's target, the tests' live webhook port), :class:`Target` is the
counting endpoint an ``http`` sink delivers to.

The target records every delivery it answered 2xx — its ``ce-id``, ``ce-subject``,
body and ``Idempotency-Key`` — so duplicates are seen (the postgres sink cannot show
them: it inserts each id once by design). ``status`` and ``delay`` can be switched at
run time to simulate a sink that is down or slow; ``refuse_over`` refuses (422, for
good) bodies larger than that many bytes and takes the rest.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from faults.procs import FaultError, free_port


class ServerThread:
    """A uvicorn server in a daemon thread with its own event loop (so slow answers do
    not cost a thread each); :meth:`start` returns once it listens."""

    def __init__(self, config: uvicorn.Config, what: str) -> None:
        self.server = uvicorn.Server(config)
        self.what = what
        self._thread: threading.Thread | None = None

    def start(self, sockets: list[socket.socket] | None = None) -> None:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise FaultError(f"{self.what} did not start")
            time.sleep(0.01)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._thread is not None and not self.server.should_exit:
            self.server.should_exit = True
            self._thread.join(10)


class Target:
    """The endpoint an ``http`` sink posts to. ``received`` keeps (ce-id, ce-subject,
    body) of the accepted requests in the order they completed, ``idempotency_keys``
    their ``Idempotency-Key`` headers in the same order; ``requests`` counts every
    answered request, ``refused`` the ones answered with a non-2xx ``status``."""

    def __init__(self, port: int | None = None, *, status: int = 200, delay: float = 0.0) -> None:
        self.port = port or free_port()
        self.status = status
        self.delay = delay
        self.refuse_over: int | None = None
        self.received: list[tuple[str, str, bytes]] = []
        self.idempotency_keys: list[str] = []
        self.requests = 0
        self.refused = 0
        self._server: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> Counter[str]:
        """Accepted deliveries per ``ce-id``."""
        # list() copies in one step, while the server thread may be appending.
        return Counter(ce_id for ce_id, _, _ in list(self.received))

    @property
    def per_key(self) -> Counter[str]:
        """Accepted deliveries per ``Idempotency-Key`` (what a receiver dedupes on)."""
        return Counter(list(self.idempotency_keys))

    def _app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            try:
                body = await request.body()
            except ClientDisconnect:  # a consumer SIGKILLed mid-request
                return Response(status_code=499)
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.status
            if self.refuse_over is not None and len(body) > self.refuse_over:
                status = 422
            self.requests += 1  # one event loop thread: no lock needed
            if 200 <= status < 300:
                h = request.headers
                self.received.append((h.get("ce-id", ""), h.get("ce-subject", ""), body))
                self.idempotency_keys.append(h.get("idempotency-key", ""))
            else:
                self.refused += 1
            return Response(status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def start(self) -> Target:
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            backlog=1024,
        )
        self._server = ServerThread(config, f"target server on port {self.port}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
