"""The webhook port: verify on raw bytes, write to Kafka, then answer 202.

The hot path is a plain ASGI handler (:class:`Ingress`), not a FastAPI path
operation: FastAPI's dependency injection and its middleware layers cost about half
the throughput for work this small. :class:`GatewayApp` sends requests for configured
source paths straight to it and everything else (404s; ``/docs`` and ``/openapi.json``
only with ``gateway.api_docs: webhook``, else they are on the admin port) to a FastAPI
app, whose OpenAPI document describes the webhook paths by hand.

Order of checks, each answered as RFC 9457 problem details: 404 unknown path, 400
event-type path segment that is not plain path characters, 405 method, 429 over the
source's rate limit, 503 overloaded (checked first of all), 413 declared or streamed
body over the limit, 408 body too slow, 401 verification, 400 body that must be JSON
and is not (or nests too deeply to parse), 400 a header, query or body value that would
carry a control character (or, as the event type, an over-long value) into a record
header (the record key is hashed instead), 503 Kafka did not acknowledge in time; else
202 with the event id. With the durable spool enabled
(:mod:`gateway.spool`), a record Kafka did not acknowledge is journaled and answered
202, and while the journal holds records new ones are journaled behind them (a record
whose key has an earlier one still awaiting its acknowledgement waits for that outcome
first, :meth:`Spool.accept`); 503 then only when the journal is full or cannot be
written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway import extract
from gateway.config import GatewaySection
from gateway.deadlines import Deadlines, cancel_task_at
from gateway.metrics import IngressMetrics
from gateway.openapi import create_api
from gateway.producer import ProduceError, Record, RecordProducer
from gateway.sources import Source
from gateway.spool import Spool
from gateway.verifiers import VerificationError, Verified, WebhookRequest
from webhook_common import problem, tracing
from webhook_common.contract import (
    DEFAULT_CONTENT_TYPE,
    H_CONTENT_TYPE,
    H_ID,
    H_PROVIDER_ID,
    H_QUERY,
    H_TYPE,
    HTTP_HEADER_PREFIX,
    EventMeta,
    IdOrigin,
    format_time,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

_ACCEPTED_HEADERS = [(b"content-type", b"application/json")]
# Not an HTTP status: the client went away before we answered (nginx's convention).
CLIENT_CLOSED = 499

Network = IPv4Network | IPv6Network


@dataclass(slots=True)
class IngressState:
    """Mutable process state the admin port reads."""

    in_flight: int = 0
    shutting_down: bool = False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


NOT_JSON = problem.bad_request("body is not valid JSON")
# Valid JSON all the same, so its own type: the sender may be able to flatten it.
TOO_DEEP = problem.Problem(400, "body-too-deep", "body JSON is nested too deeply to parse")


def parse_json(body: bytes) -> tuple[problem.Problem | None, Any]:
    """``(None, value)``, or why the body is refused and ``None``. orjson first, the
    standard library for the valid JSON orjson refuses (numbers beyond a double's range,
    which JavaScript reads as Infinity)."""
    try:
        return None, orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return None, json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return NOT_JSON, None
    except RecursionError:
        # Past orjson's 1024 levels the standard library recurses once per level.
        return TOO_DEEP, None


# After refusing a body as too large, read (and discard) at most this much more of it,
# for at most DRAIN_SECONDS, so that a client still sending sees the 413 instead of a
# connection reset. Anything longer is cut off by closing the connection.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


def more_body(message: Message) -> bool:
    return bool(message.get("more_body", False))


async def _drain(receive: Receive, budget: int) -> bool:
    """Discard the rest of the request body; True when it ended within the budget."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while budget >= 0:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                budget -= len(message.get("body", b""))
                if not more_body(message):
                    return budget >= 0
    except TimeoutError:
        return False
    return False


def _first(value: str) -> str:
    return value.split(",", 1)[0].strip()


def route_path(scope: Scope) -> str:
    """The path as the client sent it, percent-escapes not decoded: what routing
    matches and what the public URL a verifier checks is built from. One string for
    both, so a percent-encoded alias cannot route to one source and verify as another
    URL. (Source paths are plain characters, see ``SourceConfig.path``.)"""
    raw_path: bytes | None = scope.get("raw_path")
    if raw_path:
        return raw_path.decode("latin-1")
    path: str = scope["path"]  # a server that does not give the raw path (ASGI allows it)
    return path


BAD_SEGMENT = problem.Problem(
    400,
    "invalid-path",
    f"the event-type path segment must match {extract.EVENT_SEGMENT} (no percent-escapes)",
)


def _header_carrying(headers: Mapping[str, str], value: str) -> str | None:
    """The request header a verifier read ``value`` from, when one holds it as it is
    (looked up only to word a refusal)."""
    return next((name for name, text in headers.items() if text == value), None)


def _refused(slug: str, what: str, record_header: str, fault: str) -> problem.Problem:
    return problem.Problem(400, slug, f"{what} cannot be the record's {record_header}: it {fault}")


def _refused_type(
    event_type: extract.EventType, headers: Mapping[str, str], query: Mapping[str, str]
) -> problem.Problem | None:
    origin = event_type.origin
    if origin == "query":
        for name in event_type.params:
            fault = extract.type_fault(query[name])
            if fault is not None:
                return _refused("invalid-query", f"query parameter {name!r}", H_TYPE, fault)
    fault = extract.type_fault(event_type.value)
    if fault is None or origin == "default":
        return None
    if origin == "query":
        names = " and ".join(repr(name) for name in event_type.params)
        return _refused("invalid-query", f"query parameters {names} joined", H_TYPE, fault)
    if origin == "path":
        # Its characters were checked before the body was read (BAD_SEGMENT); its length
        # matters only once it is the type.
        return _refused("invalid-path", "the event-type path segment", H_TYPE, fault)
    if origin == "body":
        what = (
            "the body's first member name (the event type, as no header, parameter "
            "or path segment gives one)"
        )
        return _refused("invalid-event-type", what, H_TYPE, fault)
    header = _header_carrying(headers, event_type.value)
    if header is not None:
        return _refused("invalid-header", f"header {header}", H_TYPE, fault)
    return _refused(
        "invalid-event-type", "the event type the source's verifier reported", H_TYPE, fault
    )


def refused_value(
    source: Source,
    verified: Verified,
    event_type: extract.EventType,
    id_origin: IdOrigin,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    query_string: str,
) -> problem.Problem | None:
    """A 400 naming the first request value that would carry a control character (or,
    as the event type, an over-long value) into a record header; None when all may go as
    they are. The record key is not refused: :func:`extract.bounded` hashes it."""
    refused = _refused_type(event_type, headers, query)
    if refused is not None:
        return refused
    if verified.event_id:
        fault = extract.control_fault(verified.event_id)
        if fault is not None:
            target = H_ID if id_origin is IdOrigin.PROVIDER else H_PROVIDER_ID
            header = _header_carrying(headers, verified.event_id)
            if header is not None:
                return _refused("invalid-header", f"header {header}", target, fault)
            what = "the event id the source's verifier reported"
            return _refused("invalid-event-id", what, target, fault)
    content_type = headers.get("content-type")
    if content_type and (fault := extract.control_fault(content_type)) is not None:
        return _refused("invalid-header", "header content-type", H_CONTENT_TYPE, fault)
    for name in source.forward_headers:
        value = headers.get(name)
        if value is not None and (fault := extract.control_fault(value)) is not None:
            return _refused("invalid-header", f"header {name}", HTTP_HEADER_PREFIX + name, fault)
    if query_string and (fault := extract.control_fault(query_string)) is not None:
        what = "the query string (its bytes read as latin-1)"
        return _refused("invalid-query", what, H_QUERY, fault)
    return None


class Ingress:
    """Handles webhook requests for the configured sources."""

    def __init__(
        self,
        sources: Sequence[Source],
        producer: RecordProducer,
        metrics: IngressMetrics,
        settings: GatewaySection,
        state: IngressState | None = None,
        clock: Callable[[], float] = time.time,
        spool: Spool | None = None,
        tracer: tracing.Tracing | None = None,
    ) -> None:
        self.sources = list(sources)
        self.by_path = {s.path: s for s in self.sources}
        self.producer = producer
        self.spool = spool
        self.metrics = metrics
        self.settings = settings
        self.state = state or IngressState()
        self.clock = clock
        self.tracer = tracer
        self._trusted: tuple[Network, ...] = tuple(settings.trusted_proxies)
        self._ack_timeout = settings.producer.ack_timeout_seconds
        self._max_in_flight = settings.max_in_flight
        self._retry_after = settings.retry_after_seconds
        self._body_timeout = settings.http.body_timeout_seconds
        self._body_deadlines = Deadlines(self._body_timeout)
        # Label children resolved once: `.labels()` is a dict lookup plus a lock.
        self._requests: dict[tuple[str, int], Any] = {}
        self._duration = {s.name: metrics.request_duration.labels(s.name) for s in self.sources}
        self._produce = {s.name: metrics.produce_duration.labels(s.name) for s in self.sources}
        self._body_size = {s.name: metrics.body_size.labels(s.name) for s in self.sources}
        self._secret_matched: dict[tuple[str, int], Any] = {}
        # Read at scrape time instead of two locked updates per request.
        metrics.in_flight.set_function(lambda: self.state.in_flight)

    def match(self, path: str) -> tuple[Source, str | None] | None:
        """The source for ``path`` (its own path, or that plus an event-type segment);
        ``path`` is the :func:`route_path`."""
        source = self.by_path.get(path)
        if source is not None:
            return source, None
        parent, _, segment = path.rpartition("/")
        if segment:
            source = self.by_path.get(parent)
            if source is not None:
                return source, segment
        return None

    def count(self, source: str, status: int) -> None:
        child = self._requests.get((source, status))
        if child is None:
            child = self._requests[(source, status)] = self.metrics.requests.labels(
                source, str(status)
            )
        child.inc()

    def _start_span(
        self, tracer: tracing.Tracing, source: Source, segment: str | None, scope: Scope
    ) -> Span:
        """The request's SERVER span (tracing on): child of its ``traceparent`` if valid."""
        traceparent = tracestate = ""
        for name, value in scope["headers"]:
            if name == b"traceparent" and not traceparent:
                traceparent = value.decode("latin-1")
            elif name == b"tracestate" and not tracestate:
                tracestate = value.decode("latin-1")
        traceparent, tracestate = tracing.incoming(traceparent, tracestate)
        method: str = scope["method"]
        route = source.path if segment is None else source.path + "/{event_type}"
        return tracer.start_server_span(
            f"{method} {route}",
            traceparent,
            tracestate,
            {
                "http.request.method": method,
                "http.route": route,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
                "webhookgw.source": source.name,
                "messaging.system": "kafka",
                "messaging.destination.name": source.topic,
            },
        )

    async def handle(
        self, source: Source, segment: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        tracer = self.tracer
        span = None if tracer is None else self._start_span(tracer, source, segment, scope)
        state = self.state
        if state.in_flight >= self._max_in_flight:
            self.metrics.produce_failures.labels(source.name, "overloaded").inc()
            await problem.send_problem(
                send,
                problem.unavailable(
                    "too many requests in progress; retry later", self._retry_after
                ),
                scope["path"],
            )
            self.count(source.name, 503)
            if span is not None:
                _end_span(span, 503)
            return
        state.in_flight += 1
        status = 500
        error_type = ""
        try:
            status = await self._handle(source, segment, scope, receive, send, span)
        except Exception as exc:
            # A bug, not a client error; the answer still follows the contract.
            log.exception("unexpected error handling a webhook", extra={"source": source.name})
            error_type = type(exc).__qualname__
            await problem.send_problem(send, problem.INTERNAL_ERROR, scope["path"])
        finally:
            state.in_flight -= 1
            self.count(source.name, status)
            self._duration[source.name].observe(time.perf_counter() - started)
            if span is not None:
                _end_span(span, status, error_type)

    async def _fail(self, send: Send, scope: Scope, p: problem.Problem) -> int:
        await problem.send_problem(send, p, scope["path"])
        return p.status

    async def _handle(
        self,
        source: Source,
        segment: str | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        span: Span | None = None,
    ) -> int:
        received_at = self.clock()
        if segment is not None and not extract.plain_segment(segment):
            return await self._fail(send, scope, BAD_SEGMENT)
        method: str = scope["method"]
        if method not in source.methods:
            return await self._fail(send, scope, problem.method_not_allowed(method, source.methods))
        if source.rate_limit is not None:
            wait = source.rate_limit.take()
            if wait:
                self.metrics.rate_limited.labels(source.name).inc()
                retry_after = source.rate_limit.retry_after(wait)
                return await self._fail(send, scope, problem.too_many_requests(retry_after))

        # ASGI servers send header names lower-cased. Reversed, so that of a repeated
        # header the first occurrence is the one kept.
        headers: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope["headers"])
        }

        limit = source.body_limit
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            drained = int(declared) <= DRAIN_BYTES and await _drain(receive, DRAIN_BYTES)
            return await self._fail(send, scope, problem.too_large(limit, close=not drained))

        # Read the body in the chunks the server hands us; stop at the limit, and give
        # up on a sender too slow to finish within the body timeout.
        chunks: list[bytes] = []
        size = 0
        deadline = cancel_task_at(self._body_deadlines)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return CLIENT_CLOSED
                chunk: bytes = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        deadline.cancel()
                        drained = not more_body(message) or await _drain(receive, DRAIN_BYTES)
                        return await self._fail(
                            send, scope, problem.too_large(limit, close=not drained)
                        )
                    chunks.append(chunk)
                if not more_body(message):
                    break
        except asyncio.CancelledError:
            if not deadline.caused():
                raise
            self.metrics.body_timeouts.labels(source.name).inc()
            return await self._fail(send, scope, problem.body_timeout(self._body_timeout))
        finally:
            deadline.cancel()
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._body_size[source.name].observe(size)

        raw_query: bytes = scope.get("query_string", b"")
        path = route_path(scope)
        request = WebhookRequest(
            method=method,
            url=self.public_url(source, path, scope, headers, raw_query),
            path=path,
            query_string=raw_query.decode("latin-1"),
            headers=headers,
            body=body,
        )
        try:
            verified = source.verifier.verify(request)
        except VerificationError as exc:
            self.metrics.verification_failures.labels(source.name, exc.reason).inc()
            return await self._fail(send, scope, problem.unauthorized(exc.detail))
        except Exception:
            # Verifiers must fail closed; one that raises anything else still gets 401.
            log.exception("verifier raised unexpectedly", extra={"source": source.name})
            self.metrics.verification_failures.labels(source.name, "internal").inc()
            return await self._fail(send, scope, problem.unauthorized("signature not verified"))
        if not isinstance(verified, Verified):
            log.error("verifier returned %r, not Verified", type(verified).__name__)
            self.metrics.verification_failures.labels(source.name, "internal").inc()
            return await self._fail(send, scope, problem.unauthorized("signature not verified"))
        matched_key = (source.name, verified.secret_index)
        matched = self._secret_matched.get(matched_key)
        if matched is None:
            matched = self._secret_matched[matched_key] = self.metrics.secret_matched.labels(
                source.name, str(verified.secret_index)
            )
        matched.inc()

        doc: Any = None
        if body:
            refused, doc = parse_json(body)
            if refused is not None and source.require_json:
                return await self._fail(send, scope, refused)

        query_string = request.query_string
        # First value of each parameter wins; most webhooks have no query at all.
        query = dict(parse_qsl(query_string, keep_blank_values=True)[::-1]) if query_string else {}
        event_id, id_origin, provider_id = extract.identity(
            source.event_id,
            source.name,
            verified.event_id or None,
            verified.event_id_signed,
            method,
            raw_query,
            body,
        )
        event_type = extract.resolve_event_type(verified.event_type, query, segment, doc)
        refused = refused_value(
            source, verified, event_type, id_origin, headers, query, query_string
        )
        if refused is not None:
            return await self._fail(send, scope, refused)
        entity_id = source.keys.entity_id(doc, query)
        if entity_id is not None:
            entity_id = extract.bounded(entity_id)
        else:
            self.metrics.key_fallback.labels(source.name).inc()
            entity_id = event_id
        if span is not None:
            # The record carries the gateway's span, so consumers' spans join its trace.
            context = span.get_span_context()
            traceparent = tracing.format_traceparent(context)
            tracestate = context.trace_state.to_header()
            span.set_attribute("cloudevents.event_id", event_id)
            span.set_attribute("cloudevents.event_type", event_type.value)
        elif (incoming := headers.get(tracing.TRACEPARENT_HEADER)) is not None:
            # Tracing off: the sender's own trace context is carried on as it came.
            traceparent, tracestate = tracing.incoming(
                incoming, headers.get(tracing.TRACESTATE_HEADER)
            )
        else:
            traceparent = tracestate = ""
        meta = EventMeta(
            id=event_id,
            source=source.name,
            type=event_type.value,
            time=format_time(received_at),
            subject=entity_id,
            content_type=headers.get("content-type") or DEFAULT_CONTENT_TYPE,
            method=method,
            query=request.query_string,
            http_headers={h: headers[h] for h in source.forward_headers if h in headers},
            id_origin=id_origin,
            provider_id=provider_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )

        key = entity_id.encode()
        record_headers = meta.to_headers()
        spool = self.spool
        produce_started = time.perf_counter()
        try:
            if spool is not None:
                # Kafka or the journal: the spool decides, keeping each key's order.
                record = Record(source.topic, key, body, record_headers)
                await spool.accept(record, self.producer, self._ack_timeout, source=source.name)
            else:
                await self.producer.send(source.topic, key, body, record_headers, self._ack_timeout)
        except ProduceError as failure:
            self.metrics.produce_failures.labels(source.name, failure.reason).inc()
            log.warning(
                "record not acknowledged: %s",
                failure,
                extra={"source": source.name, "id": event_id},
            )
            return await self._fail(
                send, scope, problem.unavailable(str(failure), self._retry_after)
            )
        finally:
            self._produce[source.name].observe(time.perf_counter() - produce_started)

        payload = orjson.dumps({"id": event_id})
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    *_ACCEPTED_HEADERS,
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return 202

    def public_url(
        self,
        source: Source,
        path: str,
        scope: Scope,
        headers: Mapping[str, str],
        raw_query: bytes,
    ) -> str:
        """The URL the provider called, as it saw it: ``public_url`` when configured,
        else the request's own, with scheme and host from ``X-Forwarded-Proto`` /
        ``X-Forwarded-Host`` when the peer is a trusted proxy. ``path`` is the
        :func:`route_path`."""
        if source.public_url is not None:
            rest = path[len(source.path) :] if path.startswith(source.path) else ""
            base = source.public_url + rest
        else:
            scheme: str = scope.get("scheme", "http")
            host = headers.get("host")
            if host is None:
                server = scope.get("server")
                host = f"{server[0]}:{server[1]}" if server else "localhost"
            if self._trusted and self._peer_trusted(scope):
                proto = headers.get("x-forwarded-proto")
                if proto and _first(proto).lower() in ("http", "https"):
                    scheme = _first(proto).lower()
                forwarded_host = headers.get("x-forwarded-host")
                if forwarded_host and _first(forwarded_host):
                    host = _first(forwarded_host)
            base = f"{scheme}://{host}{path}"
        return f"{base}?{raw_query.decode('latin-1')}" if raw_query else base

    def _peer_trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            peer = ip_address(client[0])
        except ValueError:
            return False
        return any(peer in net for net in self._trusted)


def _end_span(span: Span, status: int, error_type: str = "") -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        # Server spans are errors for 5xx only (OpenTelemetry HTTP conventions).
        from opentelemetry.trace import StatusCode

        span.set_attribute("error.type", error_type or str(status))
        span.set_status(StatusCode.ERROR)
    span.end()


class GatewayApp:
    """The ASGI app of the webhook port: source paths to :class:`Ingress`, the rest
    (docs, OpenAPI, 404s) to FastAPI."""

    def __init__(self, ingress: Ingress, api: FastAPI) -> None:
        self.ingress = ingress
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self.ingress.match(route_path(scope))
            if found is not None:
                await self.ingress.handle(found[0], found[1], scope, receive, send)
                return
        await self.api(scope, receive, send)


def create_app(ingress: Ingress) -> GatewayApp:
    api = create_api(
        ingress.sources,
        lambda status: ingress.count("", status),
        docs=ingress.settings.api_docs == "webhook",
    )
    return GatewayApp(ingress, api)
