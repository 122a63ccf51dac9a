"""The one Kafka producer of an ingress process.

Idempotent with ``acks=all``: a record counts as written only when every in-sync
replica has it, and the producer's own retries cannot duplicate it. The request
handler awaits :meth:`KafkaProducer.send` and answers 202 only when it returns; any
failure or a missed deadline is a :class:`ProduceError` (answered 503, the provider
retries, consumers deduplicate by event id if the record did land after all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.config import ProducerSettings
from gateway.deadlines import Deadlines, cancel_task_at
from webhook_common.config import KafkaSettings
from webhook_common.errors import WebhookGatewayError
from webhook_common.idempotent import RenewingProducer, retriable, session_lost

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class ProduceError(WebhookGatewayError):
    """Kafka did not acknowledge a record. ``reason`` is a metric label:
    ``timeout`` (deadline passed) or ``error`` (the client reported a failure).

    ``retriable``: the same record may be accepted later (the durable spool keeps only
    those). ``pending``: after a timeout, the producer still holds the record and this
    future resolves when Kafka finally acknowledged or refused it; the spool waits for
    it instead of sending a second copy."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        retriable: bool = True,
        pending: asyncio.Future[Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retriable = retriable
        self.pending = pending


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the gateway writes it."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers


class RecordProducer(Protocol):
    """What the request handler needs; tests substitute a fake."""

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        """Return once Kafka acknowledged the record; else raise :class:`ProduceError`."""
        ...

    async def readiness(self) -> str | None:
        """``None`` when ready, else why not (for ``/readyz``)."""
        ...

    def topic_known(self, topic: str) -> bool:
        """False only when Kafka answered metadata without ``topic`` (never during an
        outage, which leaves the last metadata in place)."""
        ...


KAFKA_UNREACHABLE = "Kafka unreachable"
NOT_CONNECTED = "the producer has not connected yet"
# How old the list of missing topics may be before a lookup refreshes it (seconds).
MISSING_TOPICS_MAX_AGE = 1.0


def is_outage(reason: str) -> bool:
    """``reason`` (from :meth:`RecordProducer.readiness`) says only that Kafka cannot be
    reached: what the durable spool is for. Missing topics are not an outage."""
    return reason.startswith(KAFKA_UNREACHABLE)


def unknown_topic(topic: str) -> ProduceError:
    # Not retriable: journaling it would 202 a record that no drain can deliver until
    # someone creates the topic, and hold every later spooled record behind it.
    return ProduceError(
        "unknown_topic",
        f"topic {topic!r} does not exist in Kafka (run `python -m gateway topics create`)",
        retriable=False,
    )


def _refused(exc: KafkaError) -> ProduceError:
    why = " (the producer is being replaced)" if session_lost(exc) else ""
    return ProduceError(
        "error",
        f"Kafka refused the record: {type(exc).__name__}{why}",
        retriable=retriable(exc),
    )


class KafkaProducer:
    """aiokafka producer with the gateway's settings and an acknowledgement deadline."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ProducerSettings,
        *,
        max_request_size: int,
        topics: Sequence[str],
        on_renew: Callable[[], None] | None = None,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._max_request_size = max_request_size
        self._topics = tuple(dict.fromkeys(topics))
        self._on_renew = on_renew
        self._producer: RenewingProducer | None = None
        self._ready_cache: tuple[float, str | None] = (0.0, f"{KAFKA_UNREACHABLE}: {NOT_CONNECTED}")
        # The topics the last full metadata answer lacked. aiokafka's own cluster view
        # holds only the topics of its last request, so it cannot say which are missing.
        self._missing: frozenset[str] = frozenset()
        self._missing_at = float("-inf")
        self._refresh: asyncio.Task[None] | None = None
        self._deadlines: dict[float, Deadlines] = {}

    def client_kwargs(self) -> dict[str, Any]:
        compression = self._settings.compression
        return {
            **self._kafka.client_kwargs(),
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": self._settings.linger_ms,
            "max_batch_size": self._settings.max_batch_bytes,
            "compression_type": None if compression == "none" else compression,
            "max_request_size": self._max_request_size,
        }

    async def start(self) -> None:
        """Connect, then learn the partitions of every source topic so the first
        request does not pay for it. A missing topic is logged, not fatal: the
        gateway serves (requests for it get 503) and ``/readyz`` says why."""
        producer = RenewingProducer(
            lambda: AIOKafkaProducer(**self.client_kwargs()),
            name="gateway producer",
            on_renew=self._on_renew,
        )
        await producer.start()
        self._producer = producer
        try:
            missing = await self.missing_topics()
            if missing:
                log.warning(
                    "topics do not exist (run `python -m gateway topics create`): %s",
                    ", ".join(missing),
                )
            client = producer.current
            for topic in self._topics:
                if topic not in missing and client is not None:
                    await client.partitions_for(topic)
        except BaseException:
            self._producer = None  # a later `start` begins afresh
            await producer.stop()
            raise
        self._ready_cache = (0.0, None)

    async def missing_topics(self) -> list[str]:
        current = self._client()
        if current is None:
            return list(self._topics)
        metadata = await current.client.fetch_all_metadata()
        known = metadata.topics()
        missing = [t for t in self._topics if t not in known]
        self._missing, self._missing_at = frozenset(missing), time.monotonic()
        return missing

    def topic_known(self, topic: str) -> bool:
        """From the last full metadata answer, refreshed in the background when older
        than a second: a topic deleted meanwhile still looks known for that long. An
        outage keeps the last answer, so it never makes a topic look missing."""
        if (
            time.monotonic() - self._missing_at > MISSING_TOPICS_MAX_AGE
            and self._producer is not None
            and (self._refresh is None or self._refresh.done())
        ):
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_missing())
        return topic not in self._missing

    async def _refresh_missing(self) -> None:
        with contextlib.suppress(KafkaError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.missing_topics()

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        producer = self._running()
        delivery: asyncio.Future[Any] | None = None
        # One shared timer per deadline length, not one per record (gateway/deadlines.py).
        deadlines = self._deadlines.get(deadline)
        if deadlines is None:
            deadlines = self._deadlines[deadline] = Deadlines(deadline)
        timer = cancel_task_at(deadlines)
        try:
            delivery = await producer.send(topic, value, key, headers)
            # Shielded: the batch may still be delivered after our deadline, and
            # aiokafka must be able to resolve its own future then.
            await asyncio.shield(delivery)
        except asyncio.CancelledError:
            if not timer.caused():
                raise
            if delivery is None and not self.topic_known(topic):
                raise unknown_topic(topic) from None
            raise ProduceError(
                "timeout", f"Kafka did not acknowledge within {deadline:g} s", pending=delivery
            ) from None
        except KafkaError as exc:
            if not self.topic_known(topic):
                raise unknown_topic(topic) from exc
            raise _refused(exc) from exc
        finally:
            timer.cancel()

    async def enqueue(self, record: Record) -> asyncio.Future[Any]:
        """Hand ``record`` to the producer without waiting for Kafka; the future
        resolves when Kafka acknowledged (or refused) it. Records enqueued one after
        the other keep that order per partition (idempotent producer). The durable
        spool drains through this."""
        producer = self._running()
        if not self.topic_known(record.topic):
            raise unknown_topic(record.topic)
        try:
            future = await producer.send(record.topic, record.value, record.key, record.headers)
        except KafkaError as exc:
            raise _refused(exc) from exc
        return future

    def _client(self) -> AIOKafkaProducer | None:
        return None if self._producer is None else self._producer.current

    def _running(self) -> RenewingProducer:
        if self._producer is None:
            # Retriable: before the first connection (Kafka unreachable at start) the
            # spool may keep what it accepts, and a drained record is not "refused".
            raise ProduceError("error", f"{NOT_CONNECTED} (Kafka unreachable)")
        return self._producer

    async def readiness(self) -> str | None:
        now = time.monotonic()
        checked_at, reason = self._ready_cache
        if now - checked_at < 1.0:
            return reason
        try:
            async with asyncio.timeout(2.0):
                missing = await self.missing_topics()
            reason = f"topics missing: {', '.join(missing)}" if missing else None
        except (TimeoutError, KafkaError) as exc:
            reason = f"{KAFKA_UNREACHABLE}: {type(exc).__name__}"
        if self._producer is None:
            reason = f"{KAFKA_UNREACHABLE}: {NOT_CONNECTED}"
        self._ready_cache = (now, reason)
        return reason

    async def stop(self) -> None:
        """Deliver everything buffered, then disconnect."""
        producer, self._producer = self._producer, None
        if self._refresh is not None:
            self._refresh.cancel()
        if producer is None:
            return
        try:
            await producer.flush()
        finally:
            await producer.stop()
