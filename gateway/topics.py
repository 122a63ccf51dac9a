"""Creating the Kafka topics a config needs (``python -m gateway topics create``), and
checking at ``serve`` start-up that the source topics take what their sources send.

Topics are created explicitly, with the partitions and replication the config asks
for, rather than by broker auto-creation (which would use broker defaults and hide
typos in topic names). Running it again is harmless: existing topics are reported
and never altered.

Every topic it creates accepts the gateway's largest record unless its config says
otherwise: the source topics, and the others of ``topics:``, among them the consumers'
dead-letter topic, whose records are copies of raw records with a few more headers.
An existing topic that takes less is reported with the command that raises it and the
command exits 1. It does not raise the limit itself: topics are often owned elsewhere
(a platform team, infrastructure as code that would revert the change), and a change
to a live topic is for its owner to make.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.config import RECORD_OVERHEAD, GatewayConfig, SourceConfig, TopicSpec
from webhook_common.config import KafkaSettings
from webhook_common.errors import StartupError, WebhookGatewayError
from webhook_common.topicsizes import (
    MAX_MESSAGE_BYTES,
    Shortfall,
    TopicLimits,
    describe_max_message_bytes,
    fetch_max_message_bytes,
    shortfalls,
)

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicsError(WebhookGatewayError):
    """Topics could not be listed or created; the message names the topic and error."""


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    """What ``topics create`` did with one topic. For an existing one: its
    ``max.message.bytes`` (``limit``), what the config needs (``needed``), or why the
    limit could not be read (``unchecked``)."""

    spec: TopicSpec
    created: bool
    limit: int | None = None
    needed: int | None = None
    unchecked: str | None = None
    raise_command: str = ""

    @property
    def too_small(self) -> bool:
        return self.limit is not None and self.needed is not None and self.limit < self.needed

    def describe(self) -> str:
        spec = self.spec
        if self.created:
            return (
                f"created  {spec.name} ({spec.partitions} partitions, "
                f"replication factor {spec.replication_factor})"
            )
        if self.too_small:
            return (
                f"exists   {spec.name} ({MAX_MESSAGE_BYTES} {self.limit} < {self.needed} "
                f"needed: raise it with `{self.raise_command}`)"
            )
        if self.unchecked is not None:
            return (
                f"exists   {spec.name} (left unchanged; {MAX_MESSAGE_BYTES} not checked: "
                f"{self.unchecked})"
            )
        return f"exists   {spec.name} (left unchanged)"


def exit_status_for(outcomes: Sequence[TopicOutcome]) -> int:
    """1 when an existing topic is too small for the config: a provisioning step that
    leaves a topic refusing the largest records must not look like a success."""
    return 1 if any(o.too_small for o in outcomes) else 0


def needed_bytes(spec: TopicSpec, cfg: GatewayConfig) -> int | None:
    """The ``max.message.bytes`` ``topics create`` gives ``spec`` when it creates it."""
    configured = spec.config.get(MAX_MESSAGE_BYTES)
    if configured is None:
        return cfg.max_request_size
    try:
        return int(configured)
    except ValueError:
        return None  # the broker's business: it refuses the value at creation


def new_topic(spec: TopicSpec, min_message_bytes: int | None) -> NewTopic:
    configs = dict(spec.config)
    # A body at the largest limit plus headers must fit the topic's record limit
    # (the broker default is about 1 MiB, smaller than a 1 MiB body plus headers).
    if min_message_bytes is not None and MAX_MESSAGE_BYTES not in configs:
        configs[MAX_MESSAGE_BYTES] = str(min_message_bytes)
    return NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=configs)


async def create_topics(cfg: GatewayConfig) -> list[TopicOutcome]:
    """Create every topic of :meth:`GatewayConfig.topic_specs` that does not exist, and
    read the ``max.message.bytes`` of those that did."""
    specs: Sequence[TopicSpec] = cfg.topic_specs()
    admin = AIOKafkaAdminClient(**cfg.kafka.client_kwargs())
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise TopicsError(
            f"cannot connect to Kafka at {cfg.kafka.bootstrap_servers!r}: {type(exc).__name__}"
        ) from None
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: set[str] = set()
        if missing:
            # Not only the source topics: a dead letter or a republished event is a raw
            # record again, and the gateway cannot tell which listed topic is which.
            response = await admin.create_topics(
                [new_topic(s, cfg.max_request_size) for s in missing]
            )
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code == 0:
                    created.add(name)
                elif code != TOPIC_ALREADY_EXISTS:  # created meanwhile by someone else
                    message = entry[2] if len(entry) > 2 and entry[2] else f"error code {code}"
                    raise TopicsError(f"cannot create topic {name!r}: {message}")
        # Those created here have the size by construction; the others are read.
        limits = await describe_max_message_bytes(
            admin, [s.name for s in specs if s.name not in created]
        )
        return [_outcome(s, s.name in created, limits, cfg) for s in specs]
    except KafkaError as exc:
        raise TopicsError(f"Kafka admin request failed: {type(exc).__name__}: {exc}") from None
    finally:
        await admin.close()


def _outcome(
    spec: TopicSpec, created: bool, limits: TopicLimits, cfg: GatewayConfig
) -> TopicOutcome:
    if created:
        return TopicOutcome(spec, created=True)
    limit = limits.limits.get(spec.name)
    needed = needed_bytes(spec, cfg)
    command = ""
    if limit is not None and needed is not None and limit < needed:
        command = Shortfall(spec.name, limit, needed).raise_command(cfg.kafka.bootstrap_servers)
    return TopicOutcome(
        spec,
        created=False,
        limit=limit,
        needed=needed,
        unchecked=limits.unchecked.get(spec.name),
        raise_command=command,
    )


# -- the start-up check of `serve` ----------------------------------------------------


def record_bytes(source: SourceConfig) -> int:
    """The largest record ``source`` sends: a body at its limit plus the headroom the
    producer's ``max_request_size`` keeps for headers."""
    return source.body_limit + RECORD_OVERHEAD


def source_topic_problems(cfg: GatewayConfig, limits: TopicLimits) -> list[str]:
    """One message per source topic whose ``max.message.bytes`` is below the largest
    record of a source writing to it."""
    writers: dict[str, list[tuple[int, SourceConfig]]] = {}
    for i, source in enumerate(cfg.sources):
        writers.setdefault(source.topic, []).append((i, source))
    needed = {
        topic: max(record_bytes(source) for _, source in group) for topic, group in writers.items()
    }
    messages = []
    for short in shortfalls(limits, needed):
        over = [(i, s) for i, s in writers[short.topic] if record_bytes(s) > short.limit]
        names = ", ".join(repr(s.name) for _, s in over)
        effect = (
            f"webhooks of {'source' if len(over) == 1 else 'sources'} {names} whose record "
            f"(body plus headers) exceeds {short.limit} bytes will be refused by the broker "
            "and answered 503"
        )
        alternative = None
        fitting = short.limit - RECORD_OVERHEAD
        if fitting >= 1:
            keys = " and ".join(f"sources[{i}].body_limit" for i, _ in over)
            alternative = (
                f"lower {keys} to at most {fitting} "
                f"({RECORD_OVERHEAD} bytes of the record are kept for headers)"
            )
        messages.append(short.message(cfg.kafka.bootstrap_servers, effect, alternative))
    return messages


Describe = Callable[[KafkaSettings, Sequence[str]], Awaitable[TopicLimits]]


async def check_topic_sizes(cfg: GatewayConfig, describe: Describe | None = None) -> None:
    """``gateway.check_topic_sizes`` at ``serve`` start-up: log each source topic that
    is too small as an error (``warn``) or raise :class:`StartupError` (``fail``). A
    topic that is missing or cannot be described is not this check's to judge."""
    mode = cfg.gateway.check_topic_sizes
    if mode == "off":
        return
    read = describe if describe is not None else fetch_max_message_bytes
    limits = await read(cfg.kafka, [s.topic for s in cfg.sources])
    problems = source_topic_problems(cfg, limits)
    if problems and mode == "fail":
        raise StartupError(
            "gateway.check_topic_sizes is 'fail' and a source topic is too small:\n  "
            + "\n  ".join(problems)
        )
    for problem in problems:
        log.error(problem)
