"""The HTTP sink against a real server on 127.0.0.1: contract, request, signing, outcomes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

from consumers.plugins import build_sinks
from consumers.sinks import Sink, SinkContext, SinkError
from consumers.testing import SinkContract, make_event
from tests.consumers.sinks.http_target import (
    RawServer,
    Target,
    dripping_head,
    endless_body,
    free_port,
    serve,
)
from webhook_common.errors import ConfigError

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def target() -> Iterator[Target]:
    yield from serve(Target())


def context() -> SinkContext:
    return SinkContext("127.0.0.1:9092", {}, CollectorRegistry())


@asynccontextmanager
async def http_sink(**options: Any) -> AsyncIterator[Sink]:
    sink = build_sinks({"hook": {"type": "http", **options}}, context())["hook"]
    await sink.start()
    try:
        yield sink
    finally:
        await sink.aclose()


class TestHttpSinkContract(SinkContract):
    sink_type = "http"
    broken_retriable = True

    @pytest.fixture(autouse=True)
    def _target(self, target: Target) -> None:
        self.target = target

    def sink_config(self) -> dict[str, Any]:
        return {"url": self.target.url + "/hook"}

    async def delivered(self, expected: int) -> list[str]:
        return [r.headers["ce-id"] for r in self.target.requests()]

    def broken_config(self) -> dict[str, Any] | None:
        return {"url": f"http://127.0.0.1:{free_port()}/hook", "timeout_seconds": 5}


async def test_request_carries_raw_body_and_selected_headers(target: Target) -> None:
    body = b'{"b": 1,   "a": "\\u00e9"}'  # odd spacing: must arrive byte for byte
    event = make_event(
        "ключ-1",
        headers={"x-crystallize-signature": "orig", "x-private": "no", "user-agent": "Cr/1"},
        body=body,
        content_type="application/json; charset=utf-8",
    )
    async with http_sink(
        url=target.url + "/in?x=1",
        forward_headers=["X-Crystallize-Signature", "User-Agent"],
        headers={"Authorization": "Bearer t0ken"},
    ) as sink:
        await sink.send(event)
    (request,) = target.requests()
    assert (request.method, request.path, request.body) == ("POST", "/in", body)
    h = request.headers
    assert h["content-type"] == "application/json; charset=utf-8"
    assert h["x-crystallize-signature"] == "orig"
    assert h["user-agent"] == "Cr/1"  # forwarded, not httpx's own
    assert "x-private" not in h
    assert h["authorization"] == "Bearer t0ken"
    assert (h["ce-id"], h["ce-source"], h["ce-type"]) == (event.id, "contract", "thing.happened")
    assert (h["ce-time"], h["ce-subject"], h["ce-specversion"]) == (event.time, "ключ-1", "1.0")


async def test_cloudevents_headers_can_be_turned_off(target: Target) -> None:
    async with http_sink(url=target.url, cloudevents_headers=False) as sink:
        await sink.send(make_event())
    (request,) = target.requests()
    assert not any(name.startswith("ce-") for name in request.headers)


async def test_hmac_signature_verifies(target: Target) -> None:
    event = make_event()
    sign = {"scheme": "hmac-sha256", "secret": "s3cr3t-value", "header": "X-Hub-Signature-256"}
    async with http_sink(url=target.url, sign=sign) as sink:
        await sink.send(event)
    (request,) = target.requests()
    expected = hmac.new(b"s3cr3t-value", request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-hub-signature-256"] == "sha256=" + expected


async def test_hmac_base64_without_prefix(target: Target) -> None:
    sign = {"scheme": "hmac-sha256", "secret": "k", "prefix": "", "encoding": "base64"}
    async with http_sink(url=target.url, sign=sign) as sink:
        await sink.send(make_event())
    (request,) = target.requests()
    digest = hmac.new(b"k", request.body, hashlib.sha256).digest()
    assert request.headers["x-signature-256"] == base64.b64encode(digest).decode()


async def test_standard_webhooks_signature_verifies_with_the_reference_library(
    target: Target,
) -> None:
    event = make_event()
    async with http_sink(
        url=target.url, sign={"scheme": "standard-webhooks", "secret": WHSEC}
    ) as s:
        await s.send(event)
    (request,) = target.requests()
    assert request.headers["webhook-id"] == event.id
    # The reference implementation (an independent oracle) accepts it, and parses the body.
    assert Webhook(WHSEC).verify(request.body, request.headers) == orjson.loads(event.body)
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        Webhook(WHSEC).verify(request.body + b" ", request.headers)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retriable(target: Target, status: int) -> None:
    target.answer(status)
    async with http_sink(url=target.url) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event())
        assert info.value.retriable is True
        assert f"answered {status}" in str(info.value)
        await sink.send(make_event())  # the next answer is 204 again: delivered


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 413, 422])
async def test_other_statuses_are_not_retriable(target: Target, status: int) -> None:
    target.answer(status)
    async with http_sink(url=target.url) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event())
    assert info.value.retriable is False
    assert f"answered {status}" in str(info.value)


async def test_timeout_is_retriable(target: Target) -> None:
    target.delay = 3.0
    async with http_sink(url=target.url, timeout_seconds=0.2) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event())
    assert info.value.retriable is True
    assert "no answer within 0.2 s" in str(info.value)


async def test_errors_show_no_credentials_or_query(target: Target) -> None:
    port = free_port()
    url = f"http://user:hunter2pass@127.0.0.1:{port}/hook?token=abcdef123"
    async with http_sink(
        url=url,
        headers={"Authorization": "Bearer zzsecretzz"},
        sign={"scheme": "standard-webhooks", "secret": WHSEC},
    ) as sink:
        with pytest.raises(SinkError) as info:
            await sink.send(make_event())
        text = str(info.value) + repr(info.value) + repr(sink.config)  # type: ignore[attr-defined]
    assert f"http://127.0.0.1:{port}/hook" in str(info.value)
    for secret in ("hunter2pass", "abcdef123", "zzsecretzz", WHSEC):
        assert secret not in text
    assert info.value.__cause__ is None  # nor in a chained exception's message


def test_config_errors_name_the_key_and_hide_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        build_sinks(
            {
                "hook": {
                    "type": "http",
                    "url": "http://x",
                    "sign": {"scheme": "standard-webhooks", "secret": "whsec_%%notb64"},
                }
            },
            context(),
        )
    assert "consumers.sinks.hook.sign.secret: got <redacted>" in str(info.value)
    assert "notb64" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_sinks(
            {"hook": {"type": "http", "url": "http://x", "forward_headers": ["Content-Length"]}},
            context(),
        )
    assert "consumers.sinks.hook.forward_headers" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_sinks({"hook": {"type": "http", "url": "ftp://x"}}, context())
    assert "consumers.sinks.hook.url" in str(info.value)


def test_hmac_options_are_refused_for_standard_webhooks() -> None:
    sign = {"scheme": "standard-webhooks", "secret": WHSEC, "header": "X-Sig"}
    with pytest.raises(ConfigError) as info:
        build_sinks({"hook": {"type": "http", "url": "http://x", "sign": sign}}, context())
    assert "consumers.sinks.hook.sign.header: got 'X-Sig'" in str(info.value)
    assert "hmac-sha256 only" in str(info.value)
    assert WHSEC not in str(info.value)


async def test_a_retry_resends_the_same_body_validly_signed(target: Target) -> None:
    target.answer(503)
    event = make_event()
    async with http_sink(
        url=target.url, sign={"scheme": "standard-webhooks", "secret": WHSEC}
    ) as s:
        with pytest.raises(SinkError):
            await s.send(event)
        await s.send(event)
    first, second = target.requests()
    assert first.body == second.body
    for request in (first, second):  # verify() also checks the timestamp is current
        Webhook(WHSEC).verify(request.body, request.headers)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.id


async def test_every_request_carries_the_event_id_as_idempotency_key(target: Target) -> None:
    plain, quoted, non_ascii = make_event(), make_event(id='evt-"a"\\b'), make_event(id="évt-1")
    async with http_sink(
        url=target.url,
        cloudevents_headers=False,
        forward_headers=["Idempotency-Key"],
        headers={"Idempotency-Key": "static"},
    ) as sink:
        for event in (plain, quoted, non_ascii):
            await sink.send(event)
    first, second, third = target.requests()
    assert first.headers["idempotency-key"] == f'"{plain.id}"'
    assert second.headers["idempotency-key"] == '"evt-\\"a\\"\\\\b"'
    # Not expressible as an RFC 8941 string: ours is left out (the static one remains).
    assert third.headers.get("idempotency-key") == "static"


def test_header_names_and_static_values_that_cannot_be_sent_are_refused_at_config_time() -> None:
    def refused(**options: Any) -> str:
        with pytest.raises(ConfigError) as info:
            build_sinks({"hook": {"type": "http", "url": "http://x", **options}}, context())
        return str(info.value)

    # A CR/LF in a value would end the header (or the head) early: header injection.
    text = refused(headers={"X-Token": "s3cr3t\r\nX-Injected: 1"})
    assert "consumers.sinks.hook.headers: got <redacted>" in text
    assert "'X-Token'" in text
    assert "control character" in text
    assert "s3cr3t" not in text  # a static value is secret
    assert "Injected" not in text
    assert "consumers.sinks.hook.headers" in refused(headers={"Bad Name": "v"})
    assert "consumers.sinks.hook.content_type" in refused(content_type="text/plain\nX: 1")
    assert "consumers.sinks.hook.forward_headers" in refused(forward_headers=["x-a\r\nb"])
    sign = {"scheme": "hmac-sha256", "secret": "k", "prefix": "sha256=\r\n"}
    assert "consumers.sinks.hook.sign.prefix" in refused(sign=sign)


async def test_a_control_character_in_an_event_header_is_dead_lettered_at_once(
    target: Target,
) -> None:
    # The entity id (ce-subject) and forwarded provider headers come from the record:
    # a CR or LF there can never be sent, so retrying is pointless.
    from consumers.config import RetryConfig
    from consumers.dedup import MemoryDedupStore
    from consumers.delivery import Deliverer, Outcome
    from consumers.dlq import DeadLetterWriter
    from consumers.metrics import ConsumerMetrics
    from consumers.record import SourceRecord
    from consumers.retry import SinkRetry
    from tests.consumers.fakes import FakeProducer

    cases = [
        (make_event("order-1\r\nX-Injected: 1"), "ce-subject"),
        (make_event(headers={"x-crystallize-signature": "a\nb"}), "x-crystallize-signature"),
        (make_event(headers={"x-crystallize-signature": "a\x00b"}), "x-crystallize-signature"),
    ]
    async with http_sink(url=target.url, forward_headers=["X-Crystallize-Signature"]) as sink:
        for event, header in cases:
            producer = FakeProducer()
            metrics = ConsumerMetrics(CollectorRegistry())
            deliverer = Deliverer(
                {"hook": sink},
                MemoryDedupStore(3600, 100),
                {"hook": SinkRetry(RetryConfig(initial_ms=1, max_ms=2, max_attempts=8))},
                metrics,
                DeadLetterWriter(producer, "dlq", "g"),
            )
            rec = SourceRecord(
                event.topic,
                event.partition,
                event.offset,
                event.key.encode(),
                event.body,
                tuple(event.meta().to_headers()),
            )
            assert await deliverer.deliver(event, rec, "hook") is Outcome.DEAD_LETTERED
            assert metrics.deliveries.labels("hook", "permanent_error")._value.get() == 1
            assert metrics.deliveries.labels("hook", "retriable_error")._value.get() == 0
            (letter,) = producer.sent
            headers = dict(letter["headers"])
            assert headers["dlq_reason"] == b"permanent"
            error = headers["dlq_error"].decode()
            assert f"header {header!r}" in error
            assert "control character" in error
            assert "Injected" not in error  # the value is not quoted
    assert target.requests() == []  # nothing malformed went out


async def test_a_head_that_never_ends_is_bounded_by_timeout_seconds() -> None:
    server = RawServer(dripping_head()).start()
    try:
        async with http_sink(url=server.url, timeout_seconds=0.5) as sink:
            started = time.monotonic()
            with pytest.raises(SinkError) as info:
                await asyncio.wait_for(sink.send(make_event()), 5)
            elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert info.value.retriable is True
    assert "no answer within 0.5 s" in str(info.value)
    assert elapsed < 2.5


@pytest.mark.parametrize(("status", "retriable"), [(200, None), (500, True), (400, False)])
async def test_only_a_bounded_part_of_the_response_body_is_read(
    status: int, retriable: bool | None
) -> None:
    server = RawServer(endless_body(status)).start()
    try:
        async with http_sink(url=server.url, timeout_seconds=30) as sink:
            if retriable is None:
                await asyncio.wait_for(sink.send(make_event()), 5)  # 2xx: delivered
            else:
                with pytest.raises(SinkError) as info:
                    await asyncio.wait_for(sink.send(make_event()), 5)
                assert info.value.retriable is retriable
                assert f"answered {status}" in str(info.value)
    finally:
        server.stop()
    # What the server got into the socket before the sink hung up: the sink's small
    # read plus the kernel's buffers, not an unbounded stream.
    assert server.sent < 32 * 1024 * 1024
