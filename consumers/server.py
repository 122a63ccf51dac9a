"""The admin port of a consumer process: ``/metrics``, ``/healthz``, ``/readyz``.

* ``/healthz`` — the process is alive: the fetch loop went round recently. A failing
  liveness probe should restart the process.
* ``/readyz`` — the consumer has joined its group, is not shutting down, and its dedup
  store and DLQ producer answer. Not ready is not a reason to restart.

Every other answer is an RFC 9457 problem document, and every answer is counted in
``webhookgw_consumer_admin_requests_total``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumers.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
_KNOWN = {"/metrics", "/healthz", "/readyz"}


def problem(status: int, title: str, detail: str, instance: str) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body["instance"] = instance
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def build_app(
    registry: CollectorRegistry,
    metrics: ConsumerMetrics,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
) -> Starlette:
    def count(request: Request, response: Response) -> Response:
        path = request.url.path if request.url.path in _KNOWN else "other"
        metrics.admin_requests.labels(path, str(response.status_code)).inc()
        return response

    async def metrics_endpoint(request: Request) -> Response:
        return count(request, Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST))

    async def healthz(request: Request) -> Response:
        if alive():
            return count(request, JSONResponse({"status": "ok"}))
        return count(
            request,
            problem(503, "Not alive", "the fetch loop has not run recently", "/healthz"),
        )

    async def readyz(request: Request) -> Response:
        if ready():
            return count(request, JSONResponse({"status": "ready"}))
        return count(
            request,
            problem(
                503,
                "Not ready",
                "starting, shutting down, or the dedup store or DLQ is unreachable",
                "/readyz",
            ),
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not Found", 405: "Method Not Allowed"}
        title = titles.get(exc.status_code, "Error")
        detail = f"{request.method} {request.url.path}: {title.lower()}"
        return count(request, problem(exc.status_code, title, detail, request.url.path))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("admin endpoint %s failed", request.url.path)
        return count(
            request,
            problem(500, "Internal Server Error", "the admin endpoint failed", request.url.path),
        )

    routes = [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the consumer owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return _QuietServer(config)
