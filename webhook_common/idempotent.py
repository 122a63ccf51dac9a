"""An idempotent aiokafka producer that replaces itself when Kafka forgets its session.

An idempotent producer has an id from the broker and a sequence number per partition.
When the broker answers ``OutOfOrderSequenceNumber`` (seen here after a broker restart
under load), ``UnknownProducerId`` or an old epoch, aiokafka fails the batch and keeps
its sequence numbers as they are, so every later batch for that partition fails the
same way for the life of the producer (aio-libs/aiokafka#1017). The Java client bumps
its epoch and resets the sequences; aiokafka cannot, so the remedy is a new producer
(a new id, sequences from zero).

These errors say nothing about the record: they are retriable, whatever aiokafka's
``retriable`` says (:func:`retriable`). A record the old producer had in flight may
be written twice after a renewal; consumers deduplicate by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

log = logging.getLogger(__name__)

SESSION_ERRORS: tuple[type[KafkaError], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)

# How long a replaced producer may take to finish the records it still holds (for
# partitions whose sequence numbers were fine) before it is abandoned.
RETIRE_WITHIN = 30.0
# Back-off between attempts to start the replacement while Kafka is unreachable.
RENEW_BACKOFF_MAX = 5.0


def session_lost(exc: BaseException | None) -> bool:
    """``exc`` is about the producer's id or sequence numbers, not about the record."""
    return isinstance(exc, SESSION_ERRORS)


def retriable(exc: BaseException) -> bool:
    """Whether sending the same record again can succeed: aiokafka's own ``retriable``,
    except that a lost session is retriable (a renewed producer takes the record)."""
    if session_lost(exc):
        return True
    return bool(getattr(exc, "retriable", True))


class RenewingProducer:
    """Holds the current aiokafka producer, made by ``factory``; every record sent
    through :meth:`send` whose outcome is a lost session replaces it (once per
    producer), in the background. ``on_renew`` is called for each replacement (a
    metric)."""

    def __init__(
        self,
        factory: Callable[[], AIOKafkaProducer],
        *,
        name: str,
        on_renew: Callable[[], None] | None = None,
        retire_within: float = RETIRE_WITHIN,
    ) -> None:
        self._factory = factory
        self._name = name
        self._on_renew = on_renew
        self._retire_within = retire_within
        self._current: AIOKafkaProducer | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def current(self) -> AIOKafkaProducer | None:
        """The producer records go to now; None before :meth:`start` and after
        :meth:`stop`."""
        return self._current

    @property
    def renewing(self) -> bool:
        return self._renewal is not None

    async def start(self) -> None:
        self._current = await self._started()

    async def _started(self) -> AIOKafkaProducer:
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Hand the record to the current producer; the future resolves when Kafka
        acknowledged or refused it. Raises ``KafkaError`` when there is no producer."""
        producer = self._current
        if producer is None:
            raise KafkaError(f"{self._name}: the producer is not running")
        future: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=key, headers=headers
        )
        future.add_done_callback(lambda f: self._settled(producer, f))
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        return await (await self.send(topic, value, key, headers))

    def _settled(self, producer: AIOKafkaProducer, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and session_lost(future.exception()):
            self.renew(producer, future.exception())

    def renew(self, producer: AIOKafkaProducer, exc: BaseException | None) -> None:
        """Replace ``producer`` unless it was replaced already (many records fail
        together when a session is lost)."""
        if producer is not self._current or self._renewal is not None or self._closed:
            return
        log.warning(
            "%s: Kafka no longer takes this producer's records (%s); replacing the producer",
            self._name,
            type(exc).__name__,
        )
        self._renewal = asyncio.get_running_loop().create_task(self._renew(producer))

    async def _renew(self, old: AIOKafkaProducer) -> None:
        delay = 0.1
        try:
            while True:
                try:
                    new = await self._started()
                except (KafkaError, OSError) as exc:
                    log.warning(
                        "%s: cannot start the replacement producer (%s); retrying",
                        self._name,
                        type(exc).__name__,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RENEW_BACKOFF_MAX)
                    continue
                break
            self._current = new
        finally:
            self._renewal = None
        if self._on_renew is not None:
            self._on_renew()
        log.info("%s: replacement producer started", self._name)
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self._retire_within):
                await old.stop()
        except TimeoutError:
            log.warning(
                "%s: the replaced producer did not finish its records within %g s",
                self._name,
                self._retire_within,
            )
        except KafkaError as exc:
            log.warning("%s: closing the replaced producer: %s", self._name, exc)

    async def flush(self) -> None:
        if self._current is not None:
            await self._current.flush()

    async def stop(self) -> None:
        """Deliver what the current producer holds, then disconnect (idempotent)."""
        self._closed = True
        renewal = self._renewal
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        producer, self._current = self._current, None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if producer is not None:
            await producer.stop()
