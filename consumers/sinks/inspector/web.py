"""The inspector's web app and its server: the page, the event stream and the JSON API.

Routes (all behind the ``Host`` allow-list, errors as RFC 9457 problems):

* ``GET /`` — the page (``page.html``, plain JavaScript, no build step) with this
  process's replay token and a fresh CSP nonce;
* ``GET /api/events?source=&type=&key=`` — the kept records, oldest first;
* ``GET /api/stream`` — server-sent events, resuming after ``Last-Event-ID``;
* ``GET /api/info`` — the sink's name, ``max_events`` and replay targets;
* ``POST /api/replay`` ``{seq, sink, ignore_routes}`` — replays one record; it needs the
  token in the ``x-inspector-token`` header, which a cross-site form cannot set (and no
  CORS is offered).

With an ``access_token`` (required off loopback) every route also needs it: as
``Authorization: Bearer <token>``, or the ``inspector_access`` cookie that
``GET /?access_token=<token>`` sets (HttpOnly, SameSite=Strict) before redirecting to
``/`` so the token leaves the address bar. Tokens are compared in constant time.

The page writes event data only as text (no HTML from webhooks), under a nonce-based
content security policy.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from importlib import resources

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from consumers.sinks import SinkError
from consumers.sinks.inspector.buffer import FILTER_FIELDS, EventBuffer
from consumers.sinks.inspector.hostguard import HostAllowList
from consumers.sinks.inspector.metrics import InspectorMetrics
from consumers.sinks.inspector.replay import ReplayLauncher
from webhook_common.errors import StartupError
from webhook_common.problem import Problem, from_http_exception, response
from webhook_common.problem import internal_error as internal_error_response
from webhook_common.server import Server, bind, make_server

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-inspector-token"  # noqa: S105 - a header name
ACCESS_COOKIE = "inspector_access"
PAGE = "page.html"
KNOWN_PATHS = ("/", "/api/events", "/api/stream", "/api/info", "/api/replay")
_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

Handler = Callable[[Request], Awaitable[Response]]


def page_template() -> str:
    """``page.html`` as shipped in this package (placeholders not yet filled)."""
    package = __name__.rpartition(".")[0]
    return resources.files(package).joinpath(PAGE).read_text("utf-8")


def build_app(
    sink: str,
    buffer: EventBuffer,
    hosts: HostAllowList,
    replay: ReplayLauncher,
    metrics: InspectorMetrics,
    *,
    access_token: str | None = None,
) -> Starlette:
    """The Starlette app of one inspector sink, with a replay token of its own;
    ``access_token``: required on every request when set."""
    token = secrets.token_urlsafe(24)
    template = page_template()

    def same(given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def authorized(request: Request) -> bool:
        if access_token is None:
            return True
        bearer = request.headers.get("authorization", "")
        scheme, _, value = bearer.partition(" ")
        if scheme.lower() == "bearer" and same(value.strip(), access_token):
            return True
        return same(request.cookies.get(ACCESS_COOKIE), access_token)

    def count(request: Request, response: Response) -> Response:
        path = request.url.path if request.url.path in KNOWN_PATHS else "other"
        metrics.requests.labels(sink, path, str(response.status_code)).inc()
        return response

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            if not hosts.allows(request.headers.get("host", "")):
                detail = "Host header not allowed (add it to allowed_hosts)"
                return count(request, problem(403, "forbidden", detail, request.url.path))
            if access_token is not None and request.url.path == "/":
                given = request.query_params.get("access_token")
                if given is not None:
                    if not same(given, access_token):
                        detail = "wrong access_token"
                        return count(request, problem(401, "unauthorized", detail, "/"))
                    redirect = RedirectResponse("/", status_code=303)
                    redirect.set_cookie(
                        ACCESS_COOKIE, access_token, httponly=True, samesite="strict"
                    )
                    return count(request, redirect)
            if not authorized(request):
                detail = (
                    "missing or wrong access token (Authorization: Bearer, or open /?access_token=)"
                )
                response = problem(401, "unauthorized", detail, request.url.path)
                response.headers["www-authenticate"] = 'Bearer realm="inspector"'
                return count(request, response)
            return count(request, await handler(request))

        return wrapper

    async def page(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        text = (
            template.replace("__NONCE__", nonce)
            .replace("__TOKEN__", html.escape(token, quote=True))
            .replace("__SINK__", html.escape(sink, quote=True))
        )
        return HTMLResponse(
            text,
            headers={
                "content-security-policy": _CSP.format(nonce=nonce),
                "cache-control": "no-store",
                "referrer-policy": "no-referrer",
                "x-content-type-options": "nosniff",
            },
        )

    async def events(request: Request) -> Response:
        params = request.query_params
        wanted = {k: params[k] for k in FILTER_FIELDS if params.get(k)}
        return JSONResponse(buffer.select(wanted), headers={"cache-control": "no-store"})

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "sink": sink,
                "max_events": buffer.max_events,
                "replay_enabled": replay.enabled,
                "replay_sinks": replay.targets,
            }
        )

    async def stream(request: Request) -> Response:
        last = request.headers.get("last-event-id") or request.query_params.get("since")
        try:
            after = int(last) if last else 0
        except ValueError:
            return problem(400, "bad-request", "Last-Event-ID must be a number", request.url.path)
        return StreamingResponse(
            buffer.stream(after),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def replay_one(request: Request) -> Response:
        path = request.url.path
        if not same(request.headers.get(TOKEN_HEADER), token):
            return problem(
                403, "forbidden", f"missing or wrong {TOKEN_HEADER} header: use the page", path
            )
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return problem(400, "bad-request", "body is not JSON", path)
        if not isinstance(doc, dict):
            return problem(400, "bad-request", "expected a JSON object", path)
        seq, target, ignore_routes = doc.get("seq"), doc.get("sink"), doc.get("ignore_routes")
        if not isinstance(seq, int) or not isinstance(target, str):
            return problem(400, "bad-request", "expected {seq: number, sink: string}", path)
        record = buffer.get(seq)
        if record is None:
            return problem(404, "not-found", f"event {seq} is no longer kept (max_events)", path)
        if not replay.enabled:
            detail = f"replay is not enabled: set consumers.sinks.{sink}.replay_config"
            return problem(409, "conflict", detail, path)
        if target not in replay.targets:
            detail = f"sink {target!r} is not a replay target; one of: " + ", ".join(replay.targets)
            return problem(400, "bad-request", detail, path)
        # No await between this check and run() taking the lock: no second replay slips in.
        if replay.busy:
            return problem(409, "conflict", "another replay is running; try again", path)
        result = await replay.run(record, target, ignore_routes is True)
        metrics.replays.labels(sink, target, result.outcome).inc()
        if result.outcome == "timeout":
            detail = f"replay did not finish within {replay.timeout_seconds:g} s"
            return problem(504, "replay-timeout", detail, path)
        if result.outcome == "error":
            return problem(502, "replay-failed", f"replay failed: {result.output}", path)
        return JSONResponse(
            {
                "outcome": result.outcome,
                "exit_status": result.exit_status,
                "output": result.output,
                "command": result.command,
            }
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return count(request, from_http_exception(request, exc))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("inspector %s: %s failed", sink, request.url.path)
        return count(request, internal_error_response(request.url.path))

    routes = [
        Route("/", guarded(page), methods=["GET"]),
        Route("/api/events", guarded(events), methods=["GET"]),
        Route("/api/info", guarded(info), methods=["GET"]),
        Route("/api/stream", guarded(stream), methods=["GET"]),
        Route("/api/replay", guarded(replay_one), methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


class PageServer:
    """Serves an app on ``host:port`` inside the consumer's event loop (port 0: any free
    one; :attr:`port` is the bound one once started)."""

    def __init__(self, sink: str, host: str, port: int) -> None:
        self.sink = sink
        self.host = host
        self.port = port
        self._socket: socket.socket | None = None
        self._server: Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._serving is not None

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self, app: Starlette) -> None:
        """Bind (a :class:`SinkError` if the port is taken) and start serving."""
        sock = self._bind()
        self._socket = sock
        self.port = sock.getsockname()[1]
        server = make_server(app, timeout_graceful_shutdown=5)
        self._server = server
        self._serving = asyncio.create_task(
            server.serve(sockets=[sock]), name=f"inspector-{self.sink}"
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            try:
                await asyncio.wait_for(self._serving, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._serving.cancel()
            except Exception:
                log.exception("inspector %s: web server failed", self.sink)
            self._serving = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _bind(self) -> socket.socket:
        try:
            return bind(self.host, self.port)
        except StartupError as exc:
            raise SinkError(
                f"inspector sink {self.sink!r}: {exc} (set consumers.sinks.{self.sink}.port)",
                retriable=False,
            ) from None


def problem(status: int, slug: str, detail: str, instance: str) -> Response:
    return response(Problem(status, slug, detail), instance)
