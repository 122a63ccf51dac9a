"""RenewingProducer with fake aiokafka producers: when a replacement starts, how often,
and that nothing is left running (the real broker: tests/integration/test_producer_renewal.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from webhook_common.idempotent import RenewingProducer, retriable, session_lost


class Fake:
    """An aiokafka producer: ``send`` returns a future the test settles."""

    def __init__(self, n: int, *, start_fails: bool = False) -> None:
        self.n = n
        self.start_fails = start_fails
        self.started = self.stopped = False
        self.futures: list[asyncio.Future[Any]] = []
        self.stop_blocks: asyncio.Event | None = None

    async def start(self) -> None:
        if self.start_fails:
            raise KafkaConnectionError("no broker")
        self.started = True

    async def stop(self) -> None:
        if self.stop_blocks is not None:
            await self.stop_blocks.wait()
        self.stopped = True

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class Factory:
    def __init__(self, failing_starts: int = 0) -> None:
        self.made: list[Fake] = []
        self.failing_starts = failing_starts

    def __call__(self) -> Any:
        fails = self.failing_starts > 0
        self.failing_starts -= fails
        fake = Fake(len(self.made), start_fails=fails)
        self.made.append(fake)
        return fake


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OutOfOrderSequenceNumber(), True),
        (UnknownProducerId(), True),
        (NotLeaderForPartitionError(), True),
        (MessageSizeTooLargeError(), False),
        (ValueError("other"), True),
    ],
)
def test_a_lost_session_is_retriable_whatever_aiokafka_says(
    exc: BaseException, expected: bool
) -> None:
    assert retriable(exc) is expected
    assert session_lost(exc) is isinstance(exc, OutOfOrderSequenceNumber | UnknownProducerId)


async def test_many_refusals_replace_the_producer_once_and_later_sends_use_the_new_one() -> None:
    factory = Factory()
    renewed: list[int] = []
    p = RenewingProducer(factory, name="t", on_renew=lambda: renewed.append(1))
    await p.start()
    first = [await p.send("t", b"v%d" % i) for i in range(3)]
    for future in first:
        future.set_exception(OutOfOrderSequenceNumber())
    await settle()
    assert len(factory.made) == 2
    assert p.current is factory.made[1]
    assert renewed == [1]
    assert factory.made[0].stopped  # retired once its records were settled
    await p.send("t", b"next")
    assert len(factory.made[1].futures) == 1
    # A refusal of a record the old producer held does not replace the new one.
    p.renew(factory.made[0], OutOfOrderSequenceNumber())
    await settle()
    assert len(factory.made) == 2
    await p.stop()
    assert factory.made[1].stopped


async def test_other_errors_keep_the_producer() -> None:
    factory = Factory()
    p = RenewingProducer(factory, name="t")
    await p.start()
    for exc in (MessageSizeTooLargeError(), NotLeaderForPartitionError()):
        (await p.send("t", b"v")).set_exception(exc)
    (await p.send("t", b"v")).cancel()
    await settle()
    assert len(factory.made) == 1
    await p.stop()


async def test_the_replacement_is_retried_while_kafka_cannot_be_reached() -> None:
    factory = Factory()
    renewed = asyncio.Event()
    p = RenewingProducer(factory, name="t", on_renew=renewed.set)
    await p.start()
    factory.failing_starts = 2
    (await p.send("t", b"v")).set_exception(UnknownProducerId())
    await asyncio.wait_for(renewed.wait(), 5)
    assert [f.start_fails for f in factory.made] == [False, True, True, False]
    assert p.current is factory.made[3]
    await p.stop()


async def test_stop_during_a_replacement_leaves_nothing_running() -> None:
    factory = Factory()
    p = RenewingProducer(factory, name="t")
    await p.start()
    factory.failing_starts = 1000  # the replacement never starts
    (await p.send("t", b"v")).set_exception(OutOfOrderSequenceNumber())
    await settle()
    assert p.renewing
    await asyncio.wait_for(p.stop(), 5)
    assert not p.renewing
    assert p.current is None
    assert factory.made[0].stopped
    with pytest.raises(Exception, match="not running"):
        await p.send("t", b"v")


async def test_a_replaced_producer_that_does_not_finish_is_abandoned_in_time() -> None:
    factory = Factory()
    p = RenewingProducer(factory, name="t", retire_within=0.05)
    await p.start()
    factory.made[0].stop_blocks = asyncio.Event()  # never set: records stuck in it
    (await p.send("t", b"v")).set_exception(OutOfOrderSequenceNumber())
    await settle()
    assert p.current is factory.made[1]
    await asyncio.wait_for(p.stop(), 5)
    assert factory.made[1].stopped
