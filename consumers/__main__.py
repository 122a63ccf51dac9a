"""Command line of the consumer workers: ``python -m consumers run|replay``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from consumers.circuit import CircuitState
from consumers.config import ConsumerConfig, load_config
from consumers.dedup import DedupStore, build_store
from consumers.delivery import Deliverer
from consumers.dlq import DeadLetterWriter
from consumers.metrics import ConsumerMetrics
from consumers.retry import SinkRetry
from consumers.sinks import Sink, SinkContext
from consumers.sinks.kafka import KafkaSink
from webhook_common import tracing
from webhook_common.admin import Probe, admin_app
from webhook_common.cli import add_config_option, exit_status
from webhook_common.config import KafkaSettings, secret_values
from webhook_common.errors import ConfigError, StartupError
from webhook_common.idempotent import RenewingProducer
from webhook_common.kafkaauth import check_access, connect
from webhook_common.logs import Redactor, log_settings, setup_logging
from webhook_common.metrics import process_registry
from webhook_common.runtime import run, server_heap
from webhook_common.server import make_server
from webhook_common.topicsizes import TopicLimits, fetch_max_message_bytes, shortfalls

if TYPE_CHECKING:
    from consumers.engine import Engine

log = logging.getLogger("consumers")

# Allocations (net of frees) between two young-generation collections while running.
GC_YOUNG_THRESHOLD = 50_000

RUN_EPILOG = """\
examples:
  python -m consumers run --config deploy/config/quickstart.yaml
  python -m consumers run --config prod.yaml --group webhook-consumers-canary --admin-port 9082

SIGTERM (or Ctrl-C) stops fetching, lets in-flight deliveries finish within
consumers.shutdown_grace_seconds, commits what completed and closes the sinks.
Admin port: /metrics, /healthz (alive), /readyz (joined, dedup and DLQ reachable).
"""

REPLAY_EPILOG = """\
examples:
  # everything in the dead-letter topic that failed in the http sink, once it is fixed
  python -m consumers replay --config prod.yaml --from-dlq --sinks orders_http
  # what the raw topic received in one hour, to two sinks, first without delivering
  python -m consumers replay --config prod.yaml --from-raw \\
      --since 2025-01-31T12:00:00Z --until 2025-01-31T13:00:00Z --sinks events_file,pg --dry-run
  # offsets 100 to 250 (inclusive) of partition 0 and 7 to 9 of partition 3
  python -m consumers replay --config prod.yaml --offsets 0:100-250 3:7-9 --sinks pg

Replays pass through dedup: what a sink already received (a mark exists) is skipped,
so a replay can be repeated safely. --offsets must lie inside what the partition
holds (log start to high watermark); a range outside it is refused before anything is
delivered. Progress goes to stderr; the summary to stdout.
Exit status: 0 when everything was delivered or skipped, 1 when deliveries failed or
the replay could not run.
"""


# The OpenTelemetry service name unless OTEL_SERVICE_NAME says otherwise.
SERVICE_NAME = "webhook-consumers"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumers",
        description="Webhook consumer workers: deduplicate, route and deliver events to sinks.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: $LOG_LEVEL, else consumers.log_level, INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=None,
        help="log line format on stderr (default: $LOG_FORMAT, else consumers.log_format, json)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser("run", help="consume and deliver", epilog=RUN_EPILOG, formatter_class=fmt)
    add_config_option(run)
    run.add_argument("--group", help="consumer group id (default: consumers.group)")
    run.add_argument(
        "--admin-port",
        type=int,
        default=8082,
        metavar="PORT",
        help="port of /metrics, /healthz, /readyz (default 8082)",
    )
    run.add_argument(
        "--admin-host",
        default="0.0.0.0",
        metavar="HOST",
        help="address the admin port binds (default 0.0.0.0)",
    )

    check = sub.add_parser(
        "check-config",
        help="validate the consumer sections of a config file without running",
        description="Validate the kafka and consumers sections (each sink's settings "
        "included, built but not started) and print a summary; exit 2 when invalid.",
        formatter_class=fmt,
    )
    add_config_option(check)

    replay = sub.add_parser(
        "replay",
        help="deliver events again from the DLQ or the raw topic",
        epilog=REPLAY_EPILOG,
        formatter_class=fmt,
    )
    add_config_option(replay)
    src = replay.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-dlq", action="store_true", help="read consumers.dlq_topic")
    src.add_argument(
        "--from-raw", action="store_true", help="read consumers.topics between --since and --until"
    )
    src.add_argument(
        "--offsets",
        nargs="+",
        metavar="P:START-END",
        help="read these offsets (inclusive) of --topic",
    )
    replay.add_argument("--since", metavar="TIME", help="ISO 8601 time (UTC if no offset)")
    replay.add_argument("--until", metavar="TIME", help="ISO 8601 time (UTC if no offset)")
    replay.add_argument("--topic", help="topic of --offsets (default: first of consumers.topics)")
    replay.add_argument(
        "--sinks",
        required=True,
        metavar="A,B",
        help="comma-separated sink names from consumers.sinks",
    )
    replay.add_argument(
        "--ignore-routes",
        action="store_true",
        help="raw replays: send every event to the sinks, routed there or not",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="read, route and check dedup, but deliver nothing"
    )
    return parser


# -- shared set-up -------------------------------------------------------------------


@dataclass
class Runtime:
    settings: ConsumerConfig
    registry: CollectorRegistry
    metrics: ConsumerMetrics
    sinks: dict[str, Sink]
    dedup: DedupStore
    # Every secret value of the settings and of the validated sink configs.
    secrets: list[str]


def describe_config(path: str | Path) -> list[str]:
    """What ``check-config`` prints for the consumer sections of ``path``: the summary
    lines; :class:`ConfigError` naming the key when they are invalid (sinks are built,
    which validates their settings, and never started)."""
    settings = load_config(path)
    rt = _build(settings, config_path=Path(path))
    cfg = settings.consumers
    lines = [
        f"  consumers: group {cfg.group}, topics {', '.join(cfg.topics)}, dedup "
        f"{cfg.dedup.store}, dead letters to {cfg.dlq_topic}"
    ]
    lines += [f"  sink {name}: {cfg.sinks[name]['type']}" for name in rt.sinks]
    for route in cfg.routes:
        lines.append(f"  route {route.name}: -> {', '.join(route.sinks)}")
    return lines


def _build(settings: ConsumerConfig, config_path: Path | None = None) -> Runtime:
    """The sinks (not started), dedup store and metrics; ``config_path`` is the file
    ``settings`` came from, which sinks that run ``python -m consumers`` reuse."""
    from consumers.plugins import SinkRegistry, build_sinks

    registry = process_registry("consumers")
    kafka = settings.kafka
    sections = settings.consumers.sinks
    context = SinkContext(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_client_kwargs=kafka.client_kwargs(),
        registry=registry,
        # Absolute now: the sinks' relative paths and the replay command must not
        # depend on the working directory of a later moment.
        config_path=config_path.absolute() if config_path is not None else None,
        sink_types={name: str(section.get("type", "")) for name, section in sections.items()},
        max_record_bytes=settings.consumers.max_record_bytes,
    )
    sink_types = SinkRegistry()
    sinks = build_sinks(sections, context, registry=sink_types)
    secrets = secret_values(settings) + secret_values(sink_types.validated)
    return Runtime(
        settings,
        registry,
        ConsumerMetrics(registry),
        sinks,
        build_store(settings.consumers.dedup),
        secrets,
    )


@contextlib.asynccontextmanager
async def _started(rt: Runtime, names: Sequence[str]) -> AsyncIterator[None]:
    started: list[Sink] = []
    try:
        await rt.dedup.start()
        for name in names:
            sink = rt.sinks[name]
            try:
                await sink.start()
            except Exception as exc:
                raise ConfigError(
                    f"consumers.sinks.{name}: could not start: {type(exc).__name__}: {exc}"
                ) from exc
            started.append(sink)
        yield
    finally:
        for sink in reversed(started):
            try:
                await sink.aclose()
            except Exception:
                log.exception("closing sink %s failed", sink.name)
        await rt.dedup.aclose()


def _producer(settings: ConsumerConfig) -> AIOKafkaProducer:
    """The dead-letter producer: a dead letter is a consumed record plus a few headers,
    so it must take a record as large as the consumed topics hold."""
    kwargs = settings.kafka.client_kwargs()
    kwargs["client_id"] = f"{settings.kafka.client_id}-dlq"
    return AIOKafkaProducer(
        enable_idempotence=True,
        acks="all",
        max_request_size=settings.consumers.max_record_bytes,
        **kwargs,
    )


def _written_topics(settings: ConsumerConfig, sinks: Mapping[str, Sink]) -> dict[str, list[str]]:
    """The topics the consumers write, each with the ``kafka`` sinks writing it: the DLQ
    topic, and each sink's topic when its template has no placeholders."""
    topics: dict[str, list[str]] = {settings.consumers.dlq_topic: []}
    for name, sink in sinks.items():
        topic = sink.fixed_topic if isinstance(sink, KafkaSink) else None
        if topic is not None:
            topics.setdefault(topic, []).append(name)
    return topics


def topic_size_problems(
    settings: ConsumerConfig, sinks: Mapping[str, Sink], limits: TopicLimits
) -> list[str]:
    """One message per written topic whose ``max.message.bytes`` is below
    ``consumers.max_record_bytes``: what is written there are records of the consumed
    topics, as large as those."""
    cfg = settings.consumers
    writers = _written_topics(settings, sinks)
    messages = []
    for short in shortfalls(limits, dict.fromkeys(writers, cfg.max_record_bytes)):
        effects = []
        if short.topic == cfg.dlq_topic:
            effects.append(
                f"dead letters above {short.limit} bytes will be written as `too_large` "
                "references (the original stays in its topic, for `replay --offsets`)"
            )
        effects += [
            f"events above {short.limit} bytes that sink {name!r} republishes will be "
            "refused by the broker and dead-lettered"
            for name in writers[short.topic]
        ]
        messages.append(short.message(settings.kafka.bootstrap_servers, "; ".join(effects)))
    return messages


Describe = Callable[[KafkaSettings, Sequence[str]], Awaitable[TopicLimits]]


async def check_topic_sizes(
    settings: ConsumerConfig, sinks: Mapping[str, Sink], describe: Describe | None = None
) -> None:
    """Warn, never fail: a record too large for its topic is still accounted for (a
    ``too_large`` reference, a dead letter) and the other records flow."""
    read = describe if describe is not None else fetch_max_message_bytes
    limits = await read(settings.kafka, list(_written_topics(settings, sinks)))
    for problem in topic_size_problems(settings, sinks, limits):
        log.warning(problem)


def _retries(
    settings: ConsumerConfig, names: Sequence[str], metrics: ConsumerMetrics
) -> dict[str, SinkRetry]:
    def on_change(sink: str) -> Callable[[CircuitState], None]:
        def changed(state: CircuitState) -> None:
            metrics.circuit_open.labels(sink).set(0 if state is CircuitState.CLOSED else 1)
            metrics.circuit_transitions.labels(sink, state).inc()
            if state is CircuitState.OPEN:
                log.warning("sink %s: circuit open, deliveries paused until a probe succeeds", sink)
            elif state is CircuitState.CLOSED:
                log.info("sink %s: circuit closed, deliveries resume", sink)

        return changed

    for n in names:
        metrics.circuit_open.labels(n).set(0)
    return {n: SinkRetry(settings.consumers.retry, on_circuit_change=on_change(n)) for n in names}


# -- run -----------------------------------------------------------------------------


def _setup_logging(args: argparse.Namespace, settings: ConsumerConfig, secrets: list[str]) -> None:
    cfg = settings.consumers
    level, fmt = log_settings(
        cfg.log_level,
        cfg.log_format,
        where="consumers",
        cli_level=args.log_level,
        cli_format=args.log_format,
    )
    setup_logging(level, json_format=fmt == "json", secrets=secrets)
    # httpx logs every request at INFO: one line per delivery is too much for a sink.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


@dataclass
class _Running:
    """What the admin port reports on while the process starts, runs and stops."""

    engine: Engine | None = None
    deliverer: Deliverer | None = None
    waiting: str | None = None  # why the engine is not running yet


async def _run(args: argparse.Namespace, settings: ConsumerConfig) -> int:
    rt = _build(settings, config_path=Path(args.config))
    _setup_logging(args, settings, rt.secrets)  # now with the secrets of the sinks' configs too
    cfg = settings.consumers
    group = args.group or cfg.group
    running = _Running(waiting="connecting to Kafka")

    def alive() -> Probe:
        engine = running.engine
        if engine is None or not engine.started or time.monotonic() - engine.last_loop < 60:
            return Probe(True)
        return Probe(False, "the fetch loop has not run for 60 s")

    def ready() -> Probe:
        engine, deliverer = running.engine, running.deliverer
        if engine is None or deliverer is None:
            return Probe(False, running.waiting or "starting")
        if engine.ready:
            # An open circuit stays ready: restarting this process would not bring
            # the sink back; the events wait in Kafka and an alert says why.
            paused = {
                n: r.circuit.state.value
                for n, r in deliverer.retries.items()
                if r.circuit.state is not CircuitState.CLOSED
            }
            return Probe(True, extra={"circuits": paused} if paused else {})
        return Probe(False, "starting, shutting down, or the dedup store or DLQ is unreachable")

    app = admin_app(
        rt.registry,
        alive=alive,
        ready=ready,
        on_answer=lambda path, status: rt.metrics.admin_requests.labels(path, str(status)).inc(),
    )
    server = make_server(app, host=args.admin_host, port=args.admin_port)
    admin = asyncio.create_task(server.serve(), name="admin")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        # Wrong credentials or an unverifiable certificate end the start (ConfigError
        # naming the key); an unreachable Kafka is waited for, not ready meanwhile.
        try:
            await check_access(settings.kafka)
        except (KafkaError, OSError, TimeoutError) as exc:
            running.waiting = f"Kafka unreachable: {type(exc).__name__}"
            log.warning(
                "Kafka at %r is unreachable (%s); waiting for it, /readyz 503 meanwhile",
                settings.kafka.bootstrap_servers,
                exc,
            )
            waiting = asyncio.create_task(connect(settings.kafka, _nothing, "consumer"))
            stop = asyncio.create_task(stopping.wait())
            await asyncio.wait([waiting, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in (waiting, stop):
                task.cancel()
            if stopping.is_set():
                return 0
        running.waiting = "starting"
        await _serve(args, settings, rt, group, running, stopping)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin, 5)
    return 0


async def _nothing() -> None:
    return None


async def _serve(
    args: argparse.Namespace,
    settings: ConsumerConfig,
    rt: Runtime,
    group: str,
    running: _Running,
    stopping: asyncio.Event,
) -> None:
    from consumers.engine import Engine

    cfg = settings.consumers
    producer = RenewingProducer(
        lambda: _producer(settings),
        name="dead-letter producer",
        on_renew=rt.metrics.producer_renewals.inc,
    )
    await producer.start()
    try:
        await check_topic_sizes(settings, rt.sinks)
        async with (
            _started(rt, list(rt.sinks)),
            tracing.session(SERVICE_NAME) as tracer,
        ):
            deliverer = Deliverer(
                rt.sinks,
                rt.dedup,
                _retries(settings, list(rt.sinks), rt.metrics),
                rt.metrics,
                DeadLetterWriter(producer, cfg.dlq_topic, group, Redactor(rt.secrets)),
                dedup_ttl=cfg.dedup.ttl_for,
                tracer=tracer,
                max_batch=cfg.concurrency.max_batch,
            )
            engine = Engine(cfg, settings.kafka, rt.sinks, deliverer, rt.metrics, group=group)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, engine.stop)
            if stopping.is_set():
                return
            running.engine, running.deliverer = engine, deliverer
            log.info(
                "consumer starting: group %s, topics %s, sinks %s, admin %s:%d",
                group,
                ",".join(cfg.topics),
                ",".join(rt.sinks),
                args.admin_host,
                args.admin_port,
            )
            # Up to max_in_flight records are alive at once: a small young generation
            # made the collector walk that window every ~700 allocations.
            with server_heap(GC_YOUNG_THRESHOLD):
                await engine.run()
    finally:
        await producer.stop()


# -- replay --------------------------------------------------------------------------


async def _replay(args: argparse.Namespace, settings: ConsumerConfig) -> int:
    from consumers.replay import Replayer, check_sink_names, parse_offsets, parse_time_arg

    cfg = settings.consumers
    names = check_sink_names([n.strip() for n in args.sinks.split(",") if n.strip()], cfg.sinks)
    if (args.since or args.until) and not args.from_raw:
        raise ConfigError("--since/--until: only with --from-raw")
    if args.topic and not args.offsets:
        raise ConfigError("--topic: only with --offsets")
    since = parse_time_arg("--since", args.since) if args.since else None
    until = parse_time_arg("--until", args.until) if args.until else None
    if args.from_raw and since is None and until is None:
        raise ConfigError("--from-raw: expected --since and/or --until")
    if since and until and until < since:
        raise ConfigError("--until: expected a time after --since")
    ranges = parse_offsets(args.offsets, args.topic or cfg.topics[0]) if args.offsets else None

    rt = _build(settings, config_path=Path(args.config))
    _setup_logging(args, settings, rt.secrets)
    if cfg.dedup.store == "memory":
        log.warning(
            "dedup store is 'memory': this replay cannot see what the consumers delivered, "
            "so events may be delivered again; use the redis store for effectively-once replays"
        )
    # A dry run touches no sink: they are built (config checked) but not started.
    async with (
        _started(rt, [] if args.dry_run else names),
        tracing.session(SERVICE_NAME) as tracer,
    ):
        deliverer = Deliverer(
            rt.sinks,
            rt.dedup,
            _retries(settings, names, rt.metrics),
            rt.metrics,
            dlq=None,
            dedup_ttl=cfg.dedup.ttl_for,
            # A replay reports what it could not deliver instead of waiting out an outage.
            hold_on_outage=False,
            tracer=tracer,
            max_batch=cfg.concurrency.max_batch,
        )
        replayer = Replayer(
            settings,
            deliverer,
            rt.metrics,
            names,
            dry_run=args.dry_run,
            ignore_routes=args.ignore_routes,
        )
        if args.from_dlq:
            report = await replayer.run_dlq()
        elif ranges is not None:
            report = await replayer.run_ranges(ranges)
        else:
            report = await replayer.run_times(cfg.topics, since, until)
    outcomes = " ".join(f"{k}={v}" for k, v in sorted(report.outcomes.items())) or "none"
    verb = "would deliver (dry run)" if args.dry_run else "replayed"
    print(f"{verb}: {report.records} record(s), skipped {report.skipped}; per sink: {outcomes}")
    return 1 if report.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def command() -> int:
        if args.command == "check-config":
            lines = describe_config(args.config)
            print(f"config OK: {args.config}", *lines, sep="\n")
            return 0
        settings = load_config(args.config)
        # Redacting from the first line on; the sinks' own secrets are added once their
        # configs are validated (`_build`).
        _setup_logging(args, settings, secret_values(settings))
        try:
            if args.command == "run":
                return run(_run(args, settings))
            return run(_replay(args, settings))
        except KafkaError as exc:
            where = settings.kafka.bootstrap_servers
            raise StartupError(f"Kafka at {where}: {type(exc).__name__}: {exc}") from None

    return exit_status(command)


if __name__ == "__main__":
    sys.exit(main())
