"""The HTTP sink against a real server on 127.0.0.1: contract, request, signing, outcomes."""

from __future__ import annotations

import base64
import hashlib
import hmac
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
from tests.consumers.sinks.http_target import Target, free_port, serve
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
