"""The ``kafka`` sink: republish each event to a topic chosen by a template.

``topic`` is a template over ``{source}`` and ``{type}`` (``events.{source}.{type}``
by default). Characters a Kafka topic name cannot hold become ``_`` and the name is
cut to 249 characters, so ``order created/v2`` gives ``events.crystallize.order_created_v2``.
The record keeps the original key, value (the raw body) and contract headers, so a
downstream consumer reads it exactly like the raw topic.

The broker may refuse to create topics on first use (the local one does): create the
target topics beforehand, or set ``create_topics: true`` to have the sink create each
one (``partitions``, ``replication_factor``) the first time it is needed.

The producer is idempotent with ``acks=all``; ``send`` returns when the broker has the
record. A producer whose sequence numbers Kafka no longer takes is replaced
(``webhook_common/idempotent.py``); its failures are retriable, never dead letters.
Concurrent sends are batched by the producer (``linger_ms``). It takes records
up to ``consumers.max_record_bytes`` (what the consumed topics hold, so a body at the
gateway's limit can be republished), and topics it creates get that
``max.message.bytes``.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import Sequence
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from pydantic import Field, field_validator

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common.config import StrictModel
from webhook_common.idempotent import RenewingProducer
from webhook_common.idempotent import retriable as producer_retriable

_FIELDS = frozenset({"source", "type"})
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")
_MAX_TOPIC = 249
_TOPIC_EXISTS = 36


def template_fields(template: str) -> set[str]:
    """Placeholders of a topic template; raises ValueError for anything but plain fields."""
    fields: set[str] = set()
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in _FIELDS or spec or conversion:
            raise ValueError(
                f"placeholder {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not allowed: use {{source}} and {{type}}"
            )
        fields.add(field)
    return fields


def topic_name(template: str, event: Event) -> str:
    """The target topic of ``event``: the template filled in and made legal."""
    name = _ILLEGAL.sub("_", template.format(source=event.source, type=event.type))[:_MAX_TOPIC]
    if name in ("", ".", ".."):
        raise SinkError(
            f"topic template {template!r} gives the illegal topic name {name!r} "
            f"for event {event.id!r}",
            retriable=False,
        )
    return name


class KafkaSinkConfig(StrictModel):
    topic: str = Field(default="events.{source}.{type}", min_length=1)
    create_topics: bool = False
    partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    linger_ms: int = Field(default=5, ge=0, le=10_000)

    @field_validator("topic")
    @classmethod
    def _template(cls, value: str) -> str:
        template_fields(value)
        return value


def _error(where: str, topic: str, exc: Exception) -> SinkError:
    if isinstance(exc, KafkaTimeoutError):
        retriable = True  # aiokafka marks timeouts final; for delivery they are transient
    elif isinstance(exc, MessageSizeTooLargeError):
        retriable = False
    elif isinstance(exc, KafkaError):
        retriable = producer_retriable(exc)
    else:
        retriable = True
    hint = " (does the topic exist?)" if "UNKNOWN_TOPIC" in str(exc).upper() else ""
    return SinkError(
        f"{where}: cannot publish to topic {topic!r}: {type(exc).__name__}: {exc}{hint}",
        retriable=retriable,
    )


class ProduceCancelled(Exception):
    """A produce whose future was cancelled: whether the broker has it is unknown, so
    it is retried (an ordinary exception, hence retriable for ``_error``)."""


def _as_exception(outcome: BaseException) -> Exception:
    if isinstance(outcome, Exception):
        return outcome
    return ProduceCancelled(f"the produce was cancelled ({type(outcome).__name__})")


class KafkaSink:
    """Republishes events through one idempotent producer."""

    Config: ClassVar[type[KafkaSinkConfig]] = KafkaSinkConfig

    def __init__(self, name: str, config: KafkaSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._client_kwargs: dict[str, Any] = dict(context.kafka_client_kwargs)
        self._client_kwargs.setdefault("bootstrap_servers", context.kafka_bootstrap_servers)
        self._where = f"kafka sink {name!r}"
        self._max_record_bytes = context.max_record_bytes
        self._producer: RenewingProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._ready_topics: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    @property
    def fixed_topic(self) -> str | None:
        """The one topic the sink writes when ``topic`` has no placeholders, else None
        (which topics a template gives is known only as events arrive)."""
        template = self.config.topic
        if template_fields(template):
            return None
        return _ILLEGAL.sub("_", template.format())[:_MAX_TOPIC]

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"{self._where} is closed", retriable=True)
        if self._producer is not None:
            return
        producer = RenewingProducer(
            lambda: AIOKafkaProducer(
                **self._client_kwargs,
                enable_idempotence=True,
                acks="all",
                linger_ms=self.config.linger_ms,
                max_request_size=self._max_record_bytes,
            ),
            name=self._where,
        )
        try:
            await producer.start()
            if self.config.create_topics:
                self._admin = AIOKafkaAdminClient(**self._client_kwargs)
                await self._admin.start()
        except Exception as exc:
            await producer.stop()
            if self._admin is not None:
                await self._admin.close()
                self._admin = None
            raise SinkError(
                f"{self._where}: cannot connect to Kafka: {type(exc).__name__}: {exc}",
                retriable=True,
            ) from exc
        self._producer = producer

    async def _ensure_topic(self, topic: str) -> None:
        """Create ``topic`` once per process when ``create_topics`` is set."""
        if self._admin is None:
            return
        ready = self._ready_topics.get(topic)
        if ready is None:
            ready = asyncio.get_running_loop().create_future()
            self._ready_topics[topic] = ready
            try:
                new = NewTopic(
                    topic,
                    self.config.partitions,
                    self.config.replication_factor,
                    # The broker default (about 1 MiB) is below a body at the gateway's
                    # limit plus its headers.
                    topic_configs={"max.message.bytes": str(self._max_record_bytes)},
                )
                response = await self._admin.create_topics([new])
                for item in response.topic_errors:
                    if item[1] not in (0, _TOPIC_EXISTS):
                        raise KafkaError(f"CreateTopics error code {item[1]} for {topic!r}")
            except Exception as exc:
                del self._ready_topics[topic]  # let the next send try again
                ready.set_exception(exc)
                ready.exception()  # retrieved here, so no "never retrieved" warning
                raise
            ready.set_result(None)
        else:
            await asyncio.shield(ready)

    async def _publish(self, events: Sequence[Event]) -> None:
        producer = self._producer
        if producer is None:
            state = "closed" if self._closed else "not started"
            raise SinkError(f"{self._where} is {state}", retriable=True)
        topics: list[str] = []
        futures: list[asyncio.Future[Any]] = []
        failure: SinkError | None = None
        for event in events:
            try:
                topic = topic_name(self.config.topic, event)
            except SinkError as exc:
                failure = SinkError(f"{self._where}: {exc}", retriable=exc.retriable)
                break
            try:
                await self._ensure_topic(topic)
                futures.append(
                    await producer.send(
                        topic, event.body, event.key.encode("utf-8"), event.meta().to_headers()
                    )
                )
            except Exception as exc:
                failure = _error(self._where, topic, exc)
                break
            topics.append(topic)
        # Wait for every record already handed over, even after a failure: each
        # outcome is retrieved and nothing is still in flight when we report.
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for topic, outcome in zip(topics, outcomes, strict=True):
            if failure is None and isinstance(outcome, BaseException):
                # A cancelled produce (the producer stopping under it) is a failure like
                # any other: the broker may not have the record.
                failure = _error(self._where, topic, _as_exception(outcome))
        if failure is not None:
            raise failure

    async def send(self, event: Event) -> None:
        await self._publish([event])

    async def send_batch(self, events: Sequence[Event]) -> None:
        await self._publish(events)

    async def aclose(self) -> None:
        self._closed = True
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        try:
            if producer is not None:
                await producer.stop()  # flushes what is in flight
        finally:
            if admin is not None:
                await admin.close()
