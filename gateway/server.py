"""Running the gateway: webhook port, admin port, producer, graceful shutdown.

Two uvicorn servers share one event loop: webhooks on the main port, ``/metrics``,
``/healthz`` and ``/readyz`` on the admin port (so probes and scrapes never queue
behind webhook traffic and are not exposed where providers call).

SIGTERM / SIGINT: ``/readyz`` turns 503 at once; after ``shutdown_delay_seconds``
(time for a load balancer to notice) the webhook port stops accepting, requests in
progress finish (up to ``shutdown_grace_seconds``), the producer flushes and
disconnects, and the admin port closes last. A request only gets 202 after Kafka
acknowledged it (or, with ``gateway.spool`` enabled, after it is in the fsynced
journal), so nothing answered 202 is lost. The spool drains for a few seconds more
before the producer flushes; what is left is drained at the next start.

As one of the workers of ``serve --workers N`` (``gateway/supervisor.py``) the same
runs with the webhook socket opened ``SO_REUSEPORT``, the spool in the worker's own
directory, and a shutdown also when the supervisor has gone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from gateway.app import Ingress, IngressState, create_app
from gateway.config import GatewayConfig, GatewaySection, HttpLimits
from gateway.httplimits import ensure_open_files, guarded_protocol, uvicorn_options
from gateway.metrics import IngressMetrics
from gateway.openapi import docs_routes
from gateway.producer import KafkaProducer, RecordProducer, is_outage
from gateway.sources import Source
from gateway.spool import Spool, SpoolOpenError, enqueue_via_send, worker_dirs
from webhook_common import tracing
from webhook_common.admin import Probe, admin_app
from webhook_common.errors import StartupError
from webhook_common.kafkaauth import check_access, connect
from webhook_common.metrics import process_registry
from webhook_common.runtime import server_heap
from webhook_common.server import Server, bind, make_server

log = logging.getLogger(__name__)

# The OpenTelemetry service name unless OTEL_SERVICE_NAME says otherwise.
SERVICE_NAME = "webhook-gateway"


# Allocations (net of frees) between two young-generation collections. At the default
# 700 the collector ran ~3,000 times in a 12 s benchmark for 0.4 s of CPU; at 20,000,
# 5 times (docs/benchmarks.md).
GC_YOUNG_THRESHOLD = 20_000


def create_admin_app(
    state: IngressState,
    producer: RecordProducer,
    registry: CollectorRegistry,
    spool: Spool | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    # Readiness as a metric too, so an alert can tell "running but not ready" (Kafka
    # unreachable, topics missing, draining) from "down"; refreshed on every scrape.
    ready_gauge = Gauge(
        "webhookgw_ingress_ready",
        "1 when /readyz answers 200 (producer connected, topics exist, not shutting "
        "down), else 0; evaluated at each scrape.",
        registry=registry,
    )

    async def not_ready_reason() -> str | None:
        reason = "shutting down" if state.shutting_down else await producer.readiness()
        if spool is not None and not state.shutting_down:
            if reason and is_outage(reason) and not spool.broken:
                reason = None  # Kafka down is what the spool is for: keep accepting
            elif reason is None and spool.stalled_for() > spool.stall_seconds:
                reason = (
                    f"the spool made no progress for {spool.stalled_for():.0f} s although "
                    f"Kafka is reachable: {spool.last_error or 'no acknowledgement'}"
                )
        ready_gauge.set(0 if reason else 1)
        return reason

    async def ready() -> Probe:
        reason = await not_ready_reason()
        if spool is None:
            return Probe(True) if reason is None else Probe(False, f"not ready: {reason}")
        extra: dict[str, Any] = {"spool": spool.status()}
        kafka = await producer.readiness()
        if kafka is not None:
            extra["kafka"] = kafka
        if reason is not None:
            return Probe(False, f"not ready: {reason}", extra=extra)
        return Probe(True, extra=extra)

    async def on_scrape() -> None:
        await not_ready_reason()

    return admin_app(registry, ready=ready, on_scrape=on_scrape, routes=routes)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "0.0.0.0"
    port: int = 8080
    admin_port: int = 8081
    admin_host: str | None = None  # None: the webhook port's host

    @property
    def admin_address(self) -> str:
        return self.host if self.admin_host is None else self.admin_host


class Supervised(Protocol):
    """What a worker of ``serve --workers N`` has in addition to a lone gateway (see
    ``gateway/supervisor.py``): its place among the workers and its supervisor."""

    @property
    def index(self) -> int: ...

    @property
    def count(self) -> int: ...

    def ready(self) -> None:
        """Tell the supervisor this worker serves (both ports listening, Kafka connected)."""

    def watch(self, on_gone: Callable[[], None]) -> None:
        """Call ``on_gone`` (on the running loop) once the supervisor has gone away."""


def _uvicorn(app: ASGIApp, grace: float, **options: Any) -> Server:
    return make_server(app, timeout_graceful_shutdown=max(1, round(grace)), **options)


def _web_options(ingress: Ingress, limits: HttpLimits) -> dict[str, Any]:
    """uvicorn settings of the webhook port: the slow/abusive client limits."""

    def refused(reason: str, status: int) -> None:
        ingress.metrics.http_refused.labels(reason).inc()
        if status:
            ingress.count("", status)

    return {
        "http": guarded_protocol(limits, refused),
        # The gateway resolves X-Forwarded-Proto/-Host itself, only for peers in
        # `gateway.trusted_proxies`. uvicorn's default would rewrite the scope's client
        # and scheme from those headers for any loopback peer: work on every request,
        # and a way around `trusted_proxies`.
        "proxy_headers": False,
        **uvicorn_options(limits),
    }


async def serve(
    cfg: GatewayConfig,
    sources: Sequence[Source],
    listen: Listen,
    *,
    registry: CollectorRegistry | None = None,
    producer: RecordProducer | None = None,
    worker: Supervised | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then shut down in order (see the module docstring).
    ``worker``: run as one of ``serve --workers N`` (shared webhook port, own spool
    directory, stop also when the supervisor is gone)."""
    registry = registry if registry is not None else process_registry("gateway")
    metrics = IngressMetrics(registry)
    settings = cfg.gateway
    kafka_producer: KafkaProducer | None = None
    if producer is None:
        kafka_producer = KafkaProducer(
            cfg.kafka,
            settings.producer,
            max_request_size=cfg.max_request_size,
            topics=[s.topic for s in sources],
            on_renew=metrics.producer_renewals.inc,
        )
        producer = kafka_producer
    state = IngressState()
    short = ensure_open_files(settings.http.max_connections)
    if short is not None:
        log.warning("%s", short)

    web_sock = bind(listen.host, listen.port, reuse_port=worker is not None)
    try:
        admin_sock = bind(listen.admin_address, listen.admin_port)
    except StartupError:
        web_sock.close()
        raise
    with web_sock, admin_sock:
        connecting: asyncio.Task[None] | None = None
        if kafka_producer is not None:
            # Wrong credentials or an unverifiable certificate end the start (ConfigError
            # naming the key); an unreachable Kafka does not: the gateway serves, not
            # ready, and connects when Kafka appears.
            try:
                await check_access(cfg.kafka)
                await kafka_producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning(
                    "Kafka at %r is unreachable (%s: %s); serving with /readyz 503 until "
                    "it can be reached",
                    cfg.kafka.bootstrap_servers,
                    type(exc).__name__,
                    exc,
                )
                connecting = asyncio.get_running_loop().create_task(
                    connect(cfg.kafka, kafka_producer.start, "gateway producer")
                )
        spool: Spool | None = None
        tracer: tracing.Tracing | None = None
        try:
            tracer = tracing.from_env(SERVICE_NAME)
            if settings.spool.enabled:
                ack_timeout = settings.producer.ack_timeout_seconds
                enqueue = (
                    kafka_producer.enqueue
                    if kafka_producer is not None
                    else enqueue_via_send(producer, ack_timeout)
                )
                own, orphans = worker_dirs(
                    Path(settings.spool.path),
                    worker.index if worker is not None else 0,
                    worker.count if worker is not None else 1,
                )
                try:
                    spool = await Spool.open(
                        settings.spool,
                        metrics,
                        enqueue,
                        ack_timeout,
                        directory=own,
                        adopt=orphans,
                    )
                except SpoolOpenError as exc:
                    raise StartupError(str(exc)) from None
                spool.start()
            ingress = Ingress(
                sources, producer, metrics, settings, state, spool=spool, tracer=tracer
            )
            await _run(
                ingress,
                create_admin_app(
                    state,
                    producer,
                    registry,
                    spool,
                    docs_routes(sources) if settings.api_docs == "admin" else (),
                ),
                settings,
                web_sock,
                admin_sock,
                kafka_producer.stop if kafka_producer is not None else None,
                worker,
            )
        finally:
            if connecting is not None:
                connecting.cancel()
            if spool is not None:
                await spool.stop(drain_within=0)
            if kafka_producer is not None:
                await kafka_producer.stop()
            if tracer is not None:
                await tracer.aclose()


async def _run(
    ingress: Ingress,
    admin_asgi: Starlette,
    settings: GatewaySection,
    web_sock: socket.socket,
    admin_sock: socket.socket,
    flush: Callable[[], Awaitable[None]] | None,
    worker: Supervised | None = None,
) -> None:
    state = ingress.state
    web = _uvicorn(
        create_app(ingress),
        settings.shutdown_grace_seconds,
        **_web_options(ingress, settings.http),
    )
    admin = _uvicorn(admin_asgi, 5, proxy_headers=False)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Everything built so far lives as long as the process (webhook_common/runtime.py).
    with server_heap(GC_YOUNG_THRESHOLD):
        web_task = asyncio.create_task(web.serve(sockets=[web_sock]), name="webhook-server")
        admin_task = asyncio.create_task(admin.serve(sockets=[admin_sock]), name="admin-server")
        if worker is not None:
            worker.watch(stop.set)  # an orphaned worker stops as on SIGTERM
        stopping = asyncio.create_task(stop.wait())
        announce = asyncio.create_task(_announce(web, admin, worker), name="announce-ready")
        try:
            log.info(
                "gateway listening: webhooks on %s, admin on %s",
                "{}:{}".format(*web_sock.getsockname()[:2]),
                "{}:{}".format(*admin_sock.getsockname()[:2]),
                extra={"sources": [s.name for s in ingress.sources]},
            )
            await asyncio.wait(
                [web_task, admin_task, stopping], return_when=asyncio.FIRST_COMPLETED
            )
            log.info("shutting down: readiness off, draining in-flight requests")
            state.shutting_down = True
            if settings.shutdown_delay_seconds and not web_task.done():
                await asyncio.sleep(settings.shutdown_delay_seconds)
            web.should_exit = True
            await web_task
            # Every request has been answered; give the spool a few seconds to drain (the
            # rest stays on disk), then deliver what the producer still buffers (records
            # whose requests timed out) before the admin port goes away.
            if ingress.spool is not None:
                await ingress.spool.stop()
            if flush is not None:
                await flush()
            admin.should_exit = True
            await admin_task
            log.info("gateway stopped")
        finally:
            stopping.cancel()
            announce.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


async def _announce(web: Server, admin: Server, worker: Supervised | None) -> None:
    """Tell the supervisor once both servers have started (they start in moments: the
    sockets are already bound and the producer connected)."""
    if worker is None:
        return
    await web.listening.wait()
    await admin.listening.wait()
    worker.ready()
