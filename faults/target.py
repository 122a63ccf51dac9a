"""A counting HTTP endpoint that an ``http`` sink delivers to.

It records the ``ce-id`` of every delivery it answered 2xx, so duplicates are seen
(the postgres sink cannot show them: it inserts each id once by design). ``status``
can be switched at run time to simulate a sink that is down.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from faults.procs import FaultError, free_port


class Target:
    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.delivered: Counter[str] = Counter()
        self.refused = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            try:
                await request.body()
            except ClientDisconnect:  # a consumer SIGKILLed mid-request
                return Response(status_code=499)
            status = self.status
            if 200 <= status < 300:
                self.delivered[request.headers.get("ce-id", "")] += 1
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
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise FaultError(f"target server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None
