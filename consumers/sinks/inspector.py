"""The ``inspector`` sink: a live web page of the latest events, for development.

Route events to it like to any sink; it keeps the last ``max_events`` in memory and
serves, inside the consumer process, one HTML page (``consumers/inspector_page.html``,
plain JavaScript, no build step) on ``host:port`` (loopback by default). The page lists
events as they arrive (server-sent events): source, type, key, time, headers and the
pretty-printed body, filtered by source, type and key.

**Replay.** A sink cannot reach the other sinks of its process (each is built and owned
by the engine), so the replay button runs the supported path instead:
``python -m consumers replay --config <replay_config> --offsets P:O-O --topic T --sinks S``
for the event's Kafka coordinates. That reads the record's exact bytes back from Kafka,
goes through dedup (a sink that already has the event skips it; with the ``memory``
dedup store the replay process cannot know, so it delivers), retries, and prints the
same summary as on the command line, which the page shows. Without ``replay_config``
the page shows that command for copying instead of running it.

**Safety.** Webhook bodies carry personal data, and the replay endpoint starts a
process, so: the default bind is 127.0.0.1; requests whose ``Host`` is not the bound
address, a loopback name or one of ``allowed_hosts`` are refused (DNS rebinding); the
replay call needs a per-process token that only the served page carries, in a custom
header (a cross-site form cannot set one, and no CORS is offered); the page's script
writes event data only as text (no HTML from webhooks) under a nonce-based CSP.

Only the partitions assigned to this consumer process reach its inspector; with
several consumers in a group, each shows its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import socket
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import orjson
import uvicorn
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import StrictModel

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
TOKEN_HEADER = "x-inspector-token"  # noqa: S105 - a header name
PAGE = "inspector_page.html"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_KNOWN_PATHS = ("/", "/api/events", "/api/stream", "/api/info", "/api/replay")
_SUBSCRIBER_QUEUE = 1000  # events a slow page may lag behind before it is dropped
_HEARTBEAT_SECONDS = 15.0


class InspectorConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    max_events: int = Field(default=500, ge=1, le=100_000)
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1, le=16 * 1024 * 1024, description="longer bodies are cut"
    )
    replay_config: Path | None = Field(
        default=None, description="config file the replay button runs the replay command with"
    )
    replay_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    allowed_hosts: list[str] = Field(
        default_factory=list, description="extra Host names accepted (when not on loopback)"
    )


@dataclass(slots=True)
class _Metrics:
    requests: Counter
    replays: Counter


# One set of collectors per registry: several inspector sinks in one process share them
# (label `sink`), and a test's fresh registry gets fresh ones.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _Metrics(
            requests=Counter(
                "webhookgw_inspector_requests",
                "HTTP requests to the inspector page, by path and status",
                ["sink", "path", "status"],
                registry=registry,
            ),
            replays=Counter(
                "webhookgw_inspector_replays",
                "Replays started from the inspector page, by target sink and outcome",
                ["sink", "target", "outcome"],
                registry=registry,
            ),
        )
        _METRICS[registry] = found
    return found


def problem(status: int, title: str, detail: str, instance: str) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def display_body(event: Event, limit: int) -> tuple[str, bool]:
    """The body as the page shows it: indented JSON when it parses, else text; cut at
    ``limit`` bytes. Returns ``(text, truncated)``."""
    raw = event.body
    truncated = len(raw) > limit
    if not truncated:
        try:
            return orjson.dumps(event.json(), option=orjson.OPT_INDENT_2).decode(), False
        except orjson.JSONDecodeError:
            pass
    return raw[:limit].decode("utf-8", "replace"), truncated


def replay_argv(config: Path, event: dict[str, Any], sink: str, ignore_routes: bool) -> list[str]:
    """The replay command for one recorded event (an argument list: no shell)."""
    kafka = event["kafka"]
    offset = kafka["offset"]
    argv = [
        sys.executable,
        "-m",
        "consumers",
        "--log-format",
        "text",
        "replay",
        "--config",
        str(config),
        "--offsets",
        f"{kafka['partition']}:{offset}-{offset}",
        "--topic",
        kafka["topic"],
        "--sinks",
        sink,
    ]
    if ignore_routes:
        argv.append("--ignore-routes")
    return argv


def _shell_line(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in ["python", *argv[1:]])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the consumer owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class InspectorSink:
    """Keeps the last events and serves them live; see the module docstring."""

    Config: ClassVar[type[InspectorConfig]] = InspectorConfig

    def __init__(self, name: str, config: InspectorConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._metrics = _metrics(context.registry)
        self._events: deque[dict[str, Any]] = deque(maxlen=config.max_events)
        self._by_seq: dict[int, dict[str, Any]] = {}
        self._seq = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._token = secrets.token_urlsafe(24)
        self._replay_config: Path | None = None
        self._replay_sinks: list[str] = []
        self._replay_lock = asyncio.Lock()
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._closed = False
        self.port = config.port  # the bound port once started (config 0: any free port)

    # -- the Sink protocol ----------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"inspector sink {self.name!r} is closed", retriable=False)
        if self._serving is not None:
            return
        if self.config.replay_config is not None:
            self._replay_config, self._replay_sinks = self._load_replay_targets(
                self.config.replay_config
            )
        sock = self._bind()
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        self._server = server
        self._serving = asyncio.create_task(
            server.serve(sockets=[sock]), name=f"inspector-{self.name}"
        )
        log.info("inspector %s: http://%s/", self.name, self._netloc())

    async def send(self, event: Event) -> None:
        if self._closed:
            raise SinkError(f"inspector sink {self.name!r} is closed", retriable=True)
        self._seq += 1
        record = self._record(self._seq, event)
        if len(self._events) == self._events.maxlen:
            old = self._events[0]
            self._by_seq.pop(old["seq"], None)
        self._events.append(record)
        self._by_seq[record["seq"]] = record
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                # The page stopped reading: drop it rather than hold up delivery; its
                # EventSource reconnects and catches up from Last-Event-ID.
                self._subscribers.discard(queue)

    async def aclose(self) -> None:
        self._closed = True
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            try:
                await asyncio.wait_for(self._serving, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._serving.cancel()
            except Exception:
                log.exception("inspector %s: web server failed", self.name)
            self._serving = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- internals ----------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise SinkError(
                f"inspector sink {self.name!r}: cannot listen on {host}:{port}: "
                f"{exc.strerror or exc} (set consumers.sinks.{self.name}.port)",
                retriable=False,
            ) from None
        return sock

    def _netloc(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _load_replay_targets(self, path: Path) -> tuple[Path, list[str]]:
        """The sinks of the replay config that the button may target (not inspectors:
        a replay process could not serve a second page on the same port)."""
        from consumers.config import load_settings

        resolved = path.resolve()
        if not resolved.is_file():
            raise SinkError(
                f"inspector sink {self.name!r}: replay_config {str(path)!r}: no such file",
                retriable=False,
            )
        settings = load_settings(resolved)
        names = [
            name
            for name, section in settings.consumers.sinks.items()
            if section.get("type") != "inspector"
        ]
        return resolved, names

    def _record(self, seq: int, event: Event) -> dict[str, Any]:
        body, truncated = display_body(event, self.config.max_body_bytes)
        return {
            "seq": seq,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "key": event.key,
            "time": event.time,
            "method": event.method,
            "query": event.query,
            "content_type": event.content_type,
            "headers": dict(event.headers),
            "body": body,
            "body_bytes": len(event.body),
            "body_truncated": truncated,
            "kafka": {"topic": event.topic, "partition": event.partition, "offset": event.offset},
            "inspected_at": time.time(),
        }

    def _allowed_host(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        allowed = {*_LOOPBACK_NAMES, self.config.host, *self.config.allowed_hosts}
        return name.lower() in {h.lower() for h in allowed}

    def _count(self, request: Request, response: Response) -> Response:
        path = request.url.path if request.url.path in _KNOWN_PATHS else "other"
        self._metrics.requests.labels(self.name, path, str(response.status_code)).inc()
        return response

    def _app(self) -> Starlette:
        count = self._count

        def guarded(
            handler: Callable[[Request], Awaitable[Response]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def wrapper(request: Request) -> Response:
                if not self._allowed_host(request):
                    return count(
                        request,
                        problem(
                            403,
                            "Forbidden",
                            "Host header not allowed (add it to allowed_hosts)",
                            request.url.path,
                        ),
                    )
                return count(request, await handler(request))

            return wrapper

        async def page(request: Request) -> Response:
            nonce = secrets.token_urlsafe(16)
            text = (
                resources.files("consumers")
                .joinpath(PAGE)
                .read_text("utf-8")
                .replace("__NONCE__", nonce)
                .replace("__TOKEN__", html.escape(self._token, quote=True))
                .replace("__SINK__", html.escape(self.name, quote=True))
            )
            csp = (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                "form-action 'none'; frame-ancestors 'none'"
            )
            return HTMLResponse(
                text,
                headers={
                    "content-security-policy": csp,
                    "cache-control": "no-store",
                    "referrer-policy": "no-referrer",
                    "x-content-type-options": "nosniff",
                },
            )

        async def events(request: Request) -> Response:
            wanted = {
                k: request.query_params[k]
                for k in ("source", "type", "key")
                if request.query_params.get(k)
            }
            selected = [e for e in self._events if all(e[k] == v for k, v in wanted.items())]
            return JSONResponse(selected, headers={"cache-control": "no-store"})

        async def info(request: Request) -> Response:
            return JSONResponse(
                {
                    "sink": self.name,
                    "max_events": self.config.max_events,
                    "replay_enabled": self._replay_config is not None,
                    "replay_sinks": self._replay_sinks,
                }
            )

        async def stream(request: Request) -> Response:
            last = request.headers.get("last-event-id") or request.query_params.get("since")
            try:
                after = int(last) if last else 0
            except ValueError:
                return problem(
                    400, "Bad Request", "Last-Event-ID must be a number", request.url.path
                )
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
            # Subscribe before taking the backlog, so nothing falls between the two.
            self._subscribers.add(queue)
            backlog = [e for e in self._events if e["seq"] > after]
            return StreamingResponse(
                self._sse(queue, backlog),
                media_type="text/event-stream",
                headers={"cache-control": "no-store", "x-accel-buffering": "no"},
            )

        async def replay(request: Request) -> Response:
            return await self._replay(request)

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            titles = {404: "Not Found", 405: "Method Not Allowed"}
            title = titles.get(exc.status_code, "Error")
            return count(
                request,
                problem(
                    exc.status_code,
                    title,
                    f"{request.method} {request.url.path}: {title.lower()}",
                    request.url.path,
                ),
            )

        async def internal_error(request: Request, exc: Exception) -> Response:
            log.exception("inspector %s: %s failed", self.name, request.url.path)
            return count(
                request,
                problem(500, "Internal Server Error", "the inspector failed", request.url.path),
            )

        routes = [
            Route("/", guarded(page), methods=["GET"]),
            Route("/api/events", guarded(events), methods=["GET"]),
            Route("/api/info", guarded(info), methods=["GET"]),
            Route("/api/stream", guarded(stream), methods=["GET"]),
            Route("/api/replay", guarded(replay), methods=["POST"]),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Exception: internal_error},
        )

    async def _sse(
        self, queue: asyncio.Queue[dict[str, Any] | None], backlog: list[dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        sent = 0
        try:
            yield b"retry: 1000\n\n"
            for record in backlog:
                sent = record["seq"]
                yield _sse_frame(record)
            while not self._closed:
                try:
                    item = await asyncio.wait_for(queue.get(), _HEARTBEAT_SECONDS)
                except TimeoutError:
                    if queue not in self._subscribers:
                        return  # dropped as too slow: end, the page reconnects
                    yield b": keep-alive\n\n"
                    continue
                if item is None:
                    return
                if item["seq"] > sent:  # already in the backlog otherwise
                    sent = item["seq"]
                    yield _sse_frame(item)
        finally:
            self._subscribers.discard(queue)

    async def _replay(self, request: Request) -> Response:
        path = request.url.path
        if request.headers.get(TOKEN_HEADER) != self._token:
            return problem(
                403, "Forbidden", f"missing or wrong {TOKEN_HEADER} header: use the page", path
            )
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return problem(400, "Bad Request", "body is not JSON", path)
        if not isinstance(doc, dict):
            return problem(400, "Bad Request", "expected a JSON object", path)
        seq, target, ignore_routes = doc.get("seq"), doc.get("sink"), doc.get("ignore_routes")
        if not isinstance(seq, int) or not isinstance(target, str):
            return problem(400, "Bad Request", "expected {seq: number, sink: string}", path)
        record = self._by_seq.get(seq)
        if record is None:
            return problem(404, "Not Found", f"event {seq} is no longer kept (max_events)", path)
        if self._replay_config is None:
            return problem(
                409,
                "Conflict",
                f"replay is not enabled: set consumers.sinks.{self.name}.replay_config",
                path,
            )
        if target not in self._replay_sinks:
            return problem(
                400,
                "Bad Request",
                f"sink {target!r} is not a replay target; one of: " + ", ".join(self._replay_sinks),
                path,
            )
        if self._replay_lock.locked():
            return problem(409, "Conflict", "another replay is running; try again", path)
        argv = replay_argv(self._replay_config, record, target, ignore_routes is True)
        async with self._replay_lock:
            outcome, status, output = await self._run_replay(argv)
        self._metrics.replays.labels(self.name, target, outcome).inc()
        body = {"outcome": outcome, "exit_status": status, "output": output}
        body["command"] = _shell_line(argv)
        if outcome == "timeout":
            return problem(
                504,
                "Gateway Timeout",
                f"replay did not finish within {self.config.replay_timeout_seconds:g} s",
                path,
            )
        if outcome == "error":
            return problem(502, "Bad Gateway", f"replay failed: {output}", path)
        return JSONResponse(body)

    async def _run_replay(self, argv: list[str]) -> tuple[str, int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(), self.config.replay_timeout_seconds
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "timeout", None, ""
        stdout = out.decode("utf-8", "replace").strip()
        stderr = err.decode("utf-8", "replace").strip()
        if proc.returncode == 0:
            return "done", 0, stdout
        # The last stderr line is the command's one-line error (or the last log line).
        last = stderr.splitlines()[-1] if stderr else ""
        return "error", proc.returncode, stdout or last or f"exit status {proc.returncode}"


def _sse_frame(record: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: webhook\ndata: %b\n\n" % (record["seq"], orjson.dumps(record))
