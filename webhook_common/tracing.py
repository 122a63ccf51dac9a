"""OpenTelemetry tracing, the same for both processes; optional (the ``otel`` extra).

Off unless the standard environment asks for it (``docs/operations.md#tracing``): the
SDK must be importable, ``OTEL_SDK_DISABLED`` not true, and ``OTEL_TRACES_EXPORTER``
set to an exporter (not ``none``) or an OTLP endpoint set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Installing
the extra alone therefore changes nothing. Off, :func:`from_env` returns ``None`` and the
callers skip tracing with one ``None`` check; the SDK is then never imported.

On, spans go through a ``BatchSpanProcessor`` to the OTLP/HTTP (protobuf) exporter,
which reads the rest of ``OTEL_EXPORTER_OTLP_*`` itself, as the sampler reads
``OTEL_TRACES_SAMPLER`` and the processor ``OTEL_BSP_*``.

The W3C ``traceparent`` checks below need no OpenTelemetry package: the gateway carries
a valid incoming ``traceparent`` into the record even with tracing off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from webhook_common import package_version
from webhook_common.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, SpanContext

log = logging.getLogger(__name__)

# version "-" trace-id "-" parent-id "-" flags, lower-case hex; all-zero ids and version
# ff are invalid. Exactly 55 characters: what a later version appends is not carried.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
)
TRACEPARENT_LENGTH = 55
# W3C allows 32 list members; 512 characters is the length it lets vendors cut to.
TRACESTATE_MAX = 512
_TRACESTATE = re.compile(r"[\x20-\x7e]*")

# The W3C Trace Context HTTP request headers.
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

_EXPORTERS = frozenset({"otlp", "console"})
_PROTOCOLS = frozenset({"http/protobuf"})
_FLUSH_MILLIS = 5000

# The opentelemetry.trace module once a Tracing exists, so that current_trace_headers
# costs one global read while tracing is off (and never imports the API).
_trace_api: Any = None


def valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a W3C ``traceparent`` this product carries."""
    return len(value) == TRACEPARENT_LENGTH and _TRACEPARENT.fullmatch(value) is not None


def valid_tracestate(value: str) -> bool:
    """Whether ``value`` may be carried as ``tracestate``: printable ASCII (no control
    character can reach a record header) of at most :data:`TRACESTATE_MAX` characters.
    Its list members are not parsed: an SDK that reads it drops what it cannot use."""
    return len(value) <= TRACESTATE_MAX and _TRACESTATE.fullmatch(value) is not None


def incoming(traceparent: str | None, tracestate: str | None) -> tuple[str, str]:
    """The trace context of a request as it may be carried on: ``(traceparent,
    tracestate)``, each ``""`` when absent or invalid (a ``tracestate`` without a valid
    ``traceparent`` means nothing, W3C says)."""
    if not traceparent or not valid_traceparent(traceparent):
        return "", ""
    if not tracestate or not valid_tracestate(tracestate):
        return traceparent, ""
    return traceparent, tracestate


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current_trace_headers() -> tuple[str, str] | None:
    """``(traceparent, tracestate)`` of the span current in this task, e.g. a delivery's
    (for an HTTP request it makes); None when tracing is off or no span is current."""
    api = _trace_api
    if api is None:
        return None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format_traceparent(context), context.trace_state.to_header()


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def exporters_from_env(env: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for, ``[]`` when tracing is off. Raises
    :class:`ConfigError` for what this product cannot export to."""
    if _true(env.get("OTEL_SDK_DISABLED")):
        return []
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [n for n in named if n]
    if named == ["none"]:
        return []
    if not named:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if not endpoint:
            return []
        named = ["otlp"]
    unknown = sorted(set(named) - _EXPORTERS)
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: {', '.join(unknown)} "
            f"not supported: expected otlp, console, a comma-separated list of them, or none"
        )
    if "otlp" in named:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(name)
            if protocol:
                if protocol.strip().lower() not in _PROTOCOLS:
                    raise ConfigError(
                        f"{name}={protocol!r}: expected http/protobuf (the OTLP exporter "
                        "this product ships)"
                    )
                break
    return list(dict.fromkeys(named))


def from_env(default_service: str, env: Mapping[str, str] | None = None) -> Tracing | None:
    """A :class:`Tracing` exporting as the standard environment says, or None when
    tracing is off or the ``otel`` extra is not installed (said once, in the log, when
    the environment asks for tracing). Call once per process, at start-up."""
    env = os.environ if env is None else env
    exporters = exporters_from_env(env)
    if not exporters:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        log.warning(
            "tracing is configured (OTEL_* variables) but OpenTelemetry is not installed; "
            "install the extra: pip install 'webhook-gateway[otel]'"
        )
        return None
    # OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name the service when they say;
    # Resource.create fills in "unknown_service" otherwise, which ours replaces.
    resource = Resource.create({SERVICE_VERSION: package_version()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    # Global only when nobody set one: a plugin's own instrumentation (say, of its HTTP
    # client) then nests its spans under the delivery's.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    log.info(
        "tracing on: service %s, exporter %s",
        resource.attributes.get(SERVICE_NAME),
        ",".join(exporters),
    )
    return Tracing(provider)


@asynccontextmanager
async def session(default_service: str) -> AsyncIterator[Tracing | None]:
    """:func:`from_env` for the block, flushed and shut down after it."""
    tracer = from_env(default_service)
    try:
        yield tracer
    finally:
        if tracer is not None:
            await tracer.aclose()


class Tracing:
    """Starts the spans of both processes on ``provider``; tests pass one with an
    in-memory exporter."""

    def __init__(self, provider: TracerProvider) -> None:
        global _trace_api
        from opentelemetry import trace

        _trace_api = trace
        self.provider = provider
        self._api = trace
        self._tracer = provider.get_tracer("webhook_gateway", package_version())

    def remote_context(self, traceparent: str, tracestate: str = "") -> SpanContext | None:
        """The span context a valid ``traceparent`` names, else None."""
        if not traceparent or not valid_traceparent(traceparent):
            return None
        api = self._api
        _, trace_id, span_id, flags = traceparent.split("-")
        state = api.TraceState.from_header([tracestate]) if tracestate else api.TraceState()
        context: SpanContext = api.SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=api.TraceFlags(int(flags, 16)),
            trace_state=state,
        )
        return context

    def start_server_span(
        self, name: str, traceparent: str, tracestate: str, attributes: Mapping[str, Any]
    ) -> Span:
        """A SERVER span, child of the request's trace context when it has a valid one
        (else the root of a new trace). The caller ends it."""
        api = self._api
        parent = self.remote_context(traceparent, tracestate)
        context = api.set_span_in_context(api.NonRecordingSpan(parent)) if parent else None
        return self._tracer.start_span(
            name, context=context, kind=api.SpanKind.SERVER, attributes=dict(attributes)
        )

    @contextmanager
    def consumer_span(
        self, name: str, traceparent: str, tracestate: str, attributes: Mapping[str, Any]
    ) -> Iterator[Span]:
        """A CONSUMER span, current while the block runs, child of and linked to the
        record's trace context when it has a valid one."""
        api = self._api
        parent = self.remote_context(traceparent, tracestate)
        context = None
        links: list[Link] = []
        if parent is not None:
            context = api.set_span_in_context(api.NonRecordingSpan(parent))
            links.append(api.Link(parent))
        span = self._tracer.start_span(
            name,
            context=context,
            kind=api.SpanKind.CONSUMER,
            attributes=dict(attributes),
            links=links,
        )
        # Not the SDK's exception handling: it would put the exception's message (which
        # may quote anything) into the span.
        with api.use_span(span, record_exception=False, set_status_on_exception=False):
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                self.fail(span, type(exc).__qualname__)
                raise
            finally:
                span.end()

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        """An event on the span current in this task (a delivery's)."""
        self._api.get_current_span().add_event(name, dict(attributes))

    def fail(self, span: Span, description: str) -> None:
        span.set_status(self._api.Status(self._api.StatusCode.ERROR, description))

    def shutdown(self) -> None:
        """Export what is buffered (waiting at most a few seconds for the collector)
        and stop. Blocks: run it in a thread from async code."""
        self.provider.force_flush(_FLUSH_MILLIS)
        self.provider.shutdown()

    async def aclose(self) -> None:
        """:meth:`shutdown` without blocking the event loop."""
        await asyncio.to_thread(self.shutdown)
