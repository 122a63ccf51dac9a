"""The admin port of every process: ``/healthz``, ``/readyz`` and ``/metrics``.

Both sides serve the same app, built from callbacks and the process's own
``CollectorRegistry``:

* ``/healthz`` — liveness: the process works (a failing liveness probe should restart it);
* ``/readyz`` — readiness: it should get traffic or work now (not ready is no reason to
  restart);
* ``/metrics`` — the registry in the Prometheus text format, after ``on_scrape`` has
  refreshed whatever is evaluated at scrape time.

A probe answers ``200`` with a small JSON document, or ``503`` as an RFC 9457 problem
with ``Retry-After``. Every other answer (404, 405, a failing probe's 500) is a problem
too, and every answer is reported to ``on_answer`` (path, or ``other``, and status) so a
process can count them.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from webhook_common import problem

__all__ = ["Probe", "ProbeCheck", "admin_app"]

log = logging.getLogger(__name__)

PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe's answer: ``ok``, why not (``detail``), and more fields for a 200."""

    ok: bool
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


ProbeCheck = Callable[[], Probe | Awaitable[Probe]]


async def _ask(check: ProbeCheck) -> Probe:
    result = check()
    if inspect.isawaitable(result):
        return await result
    return result


def _always_ok() -> Probe:
    return Probe(True)


async def _nothing() -> None:
    return None


def admin_app(
    registry: CollectorRegistry,
    *,
    alive: ProbeCheck = _always_ok,
    ready: ProbeCheck = _always_ok,
    on_scrape: Callable[[], Awaitable[None]] = _nothing,
    on_answer: Callable[[str, int], None] = lambda path, status: None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The admin ASGI app of one process (see the module docstring)."""

    def answered(request: Request, response: Response) -> Response:
        path = request.url.path
        on_answer(path if path in PATHS else "other", response.status_code)
        return response

    def probe_endpoint(
        check: ProbeCheck, ok_status: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            result = await _ask(check)
            if result.ok:
                return answered(request, JSONResponse({"status": ok_status, **result.extra}))
            p = problem.unavailable(result.detail or f"{request.url.path[1:]} failed", 1)
            if result.extra:  # what the probe knows besides why (a backlog, open circuits)
                p = dataclasses.replace(p, extensions=result.extra)
            return answered(request, problem.response(p, request.url.path))

        return endpoint

    async def metrics(request: Request) -> Response:
        await on_scrape()
        body = generate_latest(registry)
        return answered(request, Response(body, media_type=CONTENT_TYPE_LATEST))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return answered(request, problem.from_http_exception(request, exc))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("admin endpoint %s failed", request.url.path)
        return answered(request, problem.internal_error(request.url.path))

    return Starlette(
        routes=[
            Route("/healthz", probe_endpoint(alive, "ok"), methods=["GET"]),
            Route("/readyz", probe_endpoint(ready, "ready"), methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *routes,  # a process's own admin pages (the gateway's API docs)
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
