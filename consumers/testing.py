"""Contract tests for sink plugins: subclass :class:`SinkContract` in your test suite.

Every sink, built-in or third-party, must pass the same tests, so the consumer can rely
on the Sink protocol rather than on each plugin's good intentions::

    from consumers.testing import SinkContract

    class TestMySink(SinkContract):
        sink_type = "my-sink"              # the entry-point name you registered

        @pytest.fixture(autouse=True)
        def _target(self, tmp_path):       # set up a fresh target per test
            self.target = ...

        def sink_config(self):             # your sink's YAML section, without `type`
            return {"url": self.target.url}

        async def delivered(self, expected):   # event ids the target holds, in arrival order
            return await self.target.ids(wait_for=expected)

The tests build the sink the way the consumer does (entry point, then config validation,
then ``cls(name, config, context)``) and check: it is registered and satisfies the
protocol; its config model rejects unknown keys; one event and many events arrive,
each exactly once and in order per key while different keys are sent concurrently;
``send_batch`` (when present) delivers all; ``aclose`` is idempotent and safe without
``start``; ``send`` after ``aclose`` raises a retriable :class:`SinkError`; and, when
:meth:`SinkContract.broken_config` returns a config whose target fails, the failure
is a :class:`SinkError` with ``retriable`` set.

Async tests carry ``@pytest.mark.asyncio`` (pytest-asyncio is required).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from consumers.event import Event
from consumers.plugins import SinkRegistry, build_sinks
from consumers.sinks import BatchSink, Sink, SinkContext, SinkError
from webhook_common.contract import format_time
from webhook_common.errors import ConfigError

__all__ = [
    "SinkContract",
    "make_event",
]

_offsets = itertools.count()


def make_event(key: str = "key-1", n: int = 0, **changes: Any) -> Event:
    """A JSON event with a unique id; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "id": f"evt-{uuid.uuid4().hex}",
        "source": "contract",
        "type": "thing.happened",
        "key": key,
        "time": format_time(time.time()),
        "headers": {"x-request-id": f"req-{n}"},
        "body": orjson.dumps({"key": key, "n": n, "text": "héllo"}),
        "topic": "webhooks.raw",
        "partition": 0,
        "offset": next(_offsets),
    }
    fields.update(changes)
    return Event(**fields)


class SinkContract:
    """The tests every sink must pass. Not collected itself (no ``Test`` prefix)."""

    #: The entry-point name under ``webhook_gateway.sinks``.
    sink_type: ClassVar[str]
    #: Expected ``retriable`` of the broken-target failure; None accepts either.
    broken_retriable: ClassVar[bool | None] = None
    #: Upper bound of every wait in these tests, in seconds.
    timeout: ClassVar[float] = 30.0
    #: The sink's name in the tests (``consumers.sinks.<name>``).
    sink_name: ClassVar[str] = "contract"

    # ---- hooks -----------------------------------------------------------------

    def sink_config(self) -> dict[str, Any]:
        """The sink's config section (without ``type``) pointing at a fresh target."""
        raise NotImplementedError("implement sink_config() in your SinkContract subclass")

    async def delivered(self, expected: int) -> list[str]:
        """Ids of the events the target holds, in the order it received them.

        May wait (bounded) until at least ``expected`` are there, for targets that
        become visible asynchronously."""
        raise NotImplementedError("implement delivered() in your SinkContract subclass")

    def sink_context(self) -> SinkContext:
        """What the consumer passes every sink; override to point at a real broker."""
        return SinkContext(
            kafka_bootstrap_servers="127.0.0.1:9092",
            kafka_client_kwargs={"bootstrap_servers": "127.0.0.1:9092"},
            registry=CollectorRegistry(),
        )

    def sink_registry(self) -> SinkRegistry:
        """Where the sink type is looked up: the installed entry points. Override with
        ``SinkRegistry({"my-type": MySink})`` to test a class before it is installed."""
        return SinkRegistry()

    def broken_config(self) -> dict[str, Any] | None:
        """A config whose target refuses or cannot be reached; None skips that test."""
        return None

    # ---- helpers ---------------------------------------------------------------

    def build(self, config: Mapping[str, Any] | None = None) -> Sink:
        """Build the sink as the consumer does: entry point, validation, constructor."""
        section = {"type": self.sink_type, **(self.sink_config() if config is None else config)}
        sinks = build_sinks(
            {self.sink_name: section}, self.sink_context(), registry=self.sink_registry()
        )
        return sinks[self.sink_name]

    @asynccontextmanager
    async def running(self, config: Mapping[str, Any] | None = None) -> AsyncIterator[Sink]:
        sink = self.build(config)
        try:
            await asyncio.wait_for(sink.start(), self.timeout)
            yield sink
        finally:
            await asyncio.wait_for(sink.aclose(), self.timeout)

    async def wait_delivered(self, expected: int) -> list[str]:
        return await asyncio.wait_for(self.delivered(expected), self.timeout)

    # ---- the contract ----------------------------------------------------------

    def test_registered_under_its_type(self) -> None:
        cls = self.sink_registry().load(self.sink_type)
        sink = self.build()
        assert type(sink) is cls
        assert sink.name == self.sink_name

    def test_satisfies_the_protocol(self) -> None:
        sink = self.build()
        assert isinstance(sink, Sink)
        assert isinstance(sink.Config, type)
        assert issubclass(sink.Config, BaseModel)
        if hasattr(sink, "send_batch"):
            assert isinstance(sink, BatchSink)

    def test_config_rejects_unknown_keys(self) -> None:
        with pytest.raises(ConfigError) as info:
            self.build({**self.sink_config(), "no_such_option_zz": 1})
        assert f"consumers.sinks.{self.sink_name}.no_such_option_zz" in str(info.value)

    @pytest.mark.asyncio
    async def test_send_one(self) -> None:
        event = make_event()
        async with self.running() as sink:
            await asyncio.wait_for(sink.send(event), self.timeout)
            assert await self.wait_delivered(1) == [event.id]

    @pytest.mark.asyncio
    async def test_send_many_in_order_per_key(self) -> None:
        per_key = {f"key-{k}": [make_event(f"key-{k}", n) for n in range(8)] for k in range(6)}

        async def send_key(sink: Sink, events: list[Event]) -> None:
            for event in events:  # one key: strictly one after the other, as the engine does
                await sink.send(event)

        async with self.running() as sink:
            sends = [send_key(sink, events) for events in per_key.values()]
            await asyncio.wait_for(asyncio.gather(*sends), self.timeout)
            got = await self.wait_delivered(48)
        assert sorted(got) == sorted(e.id for events in per_key.values() for e in events)
        for events in per_key.values():
            ids = {e.id for e in events}
            assert [i for i in got if i in ids] == [e.id for e in events]

    @pytest.mark.asyncio
    async def test_send_batch_delivers_all(self) -> None:
        sink = self.build()
        if not isinstance(sink, BatchSink):
            pytest.skip(f"sink type {self.sink_type!r} has no send_batch")
        batch = [make_event(f"key-{k}", k) for k in range(10)]
        async with self.running() as sink:
            assert isinstance(sink, BatchSink)
            await asyncio.wait_for(sink.send_batch(batch), self.timeout)
            await asyncio.wait_for(sink.send_batch([]), self.timeout)
            got = await self.wait_delivered(10)
        assert sorted(got) == sorted(e.id for e in batch)

    @pytest.mark.asyncio
    async def test_aclose_is_idempotent(self) -> None:
        async with self.running() as sink:
            await asyncio.wait_for(sink.send(make_event()), self.timeout)
            await asyncio.wait_for(sink.aclose(), self.timeout)
        # running() closed it a second time on the way out, without error.

    @pytest.mark.asyncio
    async def test_aclose_without_start(self) -> None:
        # The consumer closes every sink it built when a later one fails to start.
        sink = self.build()
        await asyncio.wait_for(sink.aclose(), self.timeout)
        await asyncio.wait_for(sink.aclose(), self.timeout)

    @pytest.mark.asyncio
    async def test_send_after_aclose_is_a_retriable_sink_error(self) -> None:
        # Retriable: the event must not be dead-lettered because of a shutdown.
        async with self.running() as sink:
            pass
        with pytest.raises(SinkError) as info:
            await asyncio.wait_for(sink.send(make_event()), self.timeout)
        assert info.value.retriable is True

    @pytest.mark.asyncio
    async def test_failing_target_raises_sink_error(self) -> None:
        config = self.broken_config()
        if config is None:
            pytest.skip(f"{type(self).__name__} defines no broken_config()")
        sink = self.build(config)

        async def attempt() -> None:
            try:
                await asyncio.wait_for(sink.start(), self.timeout)
                await asyncio.wait_for(sink.send(make_event()), self.timeout)
            finally:
                await asyncio.wait_for(sink.aclose(), self.timeout)

        with pytest.raises(SinkError) as info:
            await attempt()
        assert isinstance(info.value.retriable, bool)
        if self.broken_retriable is not None:
            assert info.value.retriable is self.broken_retriable
        assert self.sink_name in str(info.value)
