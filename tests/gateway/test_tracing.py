"""The gateway's span per webhook, and the trace context it writes into the record."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from gateway import extract
from gateway.app import GatewayApp
from gateway.producer import ProduceError
from tests.gateway.support import SIG_HEADER, FakeProducer, SentRecord, build, sign
from tests.spans import MemoryTracing, hex_ids, memory_tracing, traceparent_of
from webhook_common.contract import H_TRACEPARENT, H_TRACESTATE

__all__ = ["memory_tracing"]

SECRET = "trace-secret-0123456789"
BODY = b'{"order":{"get":{"id":"ord-7"}}}'
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def shop(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET],
        "key": {"pointers": ["/order/get/id"]},
        "topic": "shop.raw",
        **overrides,
    }


async def post(app: GatewayApp, path: str = "/webhooks/shop", **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        return await client.post(
            path, content=BODY, headers={SIG_HEADER: sign(SECRET, BODY), **headers}
        )


def trace_headers(record: SentRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers if k in (H_TRACEPARENT, H_TRACESTATE)}


async def test_one_server_span_per_webhook_with_its_attributes(
    memory_tracing: MemoryTracing,
) -> None:
    app, _, producer, _ = build([shop()], tracer=memory_tracing)
    r = await post(app, "/webhooks/shop?concern=order&event=created")
    assert r.status_code == 202
    (span,) = memory_tracing.spans
    assert span.name == "POST /webhooks/shop"
    assert span.kind is SpanKind.SERVER
    assert span.parent is None  # no traceparent: a new trace
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/webhooks/shop",
        "url.path": "/webhooks/shop",
        "url.scheme": "http",
        "webhookgw.source": "shop",
        "messaging.system": "kafka",
        "messaging.destination.name": "shop.raw",
        "cloudevents.event_id": r.json()["id"],
        "cloudevents.event_type": "order.created",
        "http.response.status_code": 202,
    }
    assert span.status.status_code is StatusCode.UNSET
    (record,) = producer.records
    assert trace_headers(record) == {H_TRACEPARENT: traceparent_of(span)}


async def test_no_body_secret_or_signature_reaches_the_span(memory_tracing: MemoryTracing) -> None:
    app, _, _, _ = build([shop(forward_headers=[SIG_HEADER])], tracer=memory_tracing)
    assert (await post(app)).status_code == 202
    (span,) = memory_tracing.spans
    values = " ".join(str(v) for v in (span.attributes or {}).values())
    assert "ord-7" not in values  # the entity id and body stay out
    assert SECRET not in values
    assert sign(SECRET, BODY) not in values


async def test_an_incoming_traceparent_makes_the_span_its_child(
    memory_tracing: MemoryTracing,
) -> None:
    app, _, producer, _ = build([shop()], tracer=memory_tracing)
    r = await post(app, traceparent=TRACEPARENT, tracestate="congo=t61rcWkgMzE")
    assert r.status_code == 202
    (span,) = memory_tracing.spans
    assert hex_ids(span)[0] == TRACE
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT
    assert span.parent.is_remote
    (record,) = producer.records
    assert trace_headers(record) == {
        H_TRACEPARENT: traceparent_of(span),
        H_TRACESTATE: "congo=t61rcWkgMzE",
    }


async def test_an_unsampled_caller_is_followed(memory_tracing: MemoryTracing) -> None:
    app, _, producer, _ = build([shop()], tracer=memory_tracing)
    assert (await post(app, traceparent=f"00-{TRACE}-{PARENT}-00")).status_code == 202
    # The default sampler follows the caller: nothing recorded, the record says so.
    assert memory_tracing.spans == []
    (record,) = producer.records
    carried = trace_headers(record)[H_TRACEPARENT]
    assert carried.startswith(f"00-{TRACE}-")
    assert carried.endswith("-00")
    assert carried != f"00-{TRACE}-{PARENT}-00"


@pytest.mark.parametrize(
    "bad",
    [
        "junk",
        f"00-{TRACE}-{PARENT}-01-and-more",
        f"00-{'0' * 32}-{PARENT}-01",
        TRACEPARENT.upper(),
        f"ff-{TRACE}-{PARENT}-01",
        "00-" + "f" * 4000,
    ],
)
async def test_an_invalid_traceparent_is_ignored(memory_tracing: MemoryTracing, bad: str) -> None:
    app, _, producer, _ = build([shop()], tracer=memory_tracing)
    assert (await post(app, traceparent=bad, tracestate="a=b")).status_code == 202
    (span,) = memory_tracing.spans
    assert span.parent is None
    assert hex_ids(span)[0] != TRACE
    (record,) = producer.records
    assert trace_headers(record) == {H_TRACEPARENT: traceparent_of(span)}


async def test_refused_requests_have_spans_and_5xx_are_errors(
    memory_tracing: MemoryTracing,
) -> None:
    producer = FakeProducer(fail=ProduceError("timeout", "Kafka did not acknowledge"))
    app, _, _, _ = build([shop()], producer=producer, tracer=memory_tracing)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        unsigned = await client.post("/webhooks/shop", content=BODY, headers={SIG_HEADER: "x"})
    assert unsigned.status_code == 401
    assert (await post(app, "/webhooks/shop/order.paid", traceparent=TRACEPARENT)).status_code == (
        503
    )
    refused, unavailable = memory_tracing.spans
    assert refused.attributes is not None
    assert unavailable.attributes is not None
    assert refused.attributes["http.response.status_code"] == 401
    assert refused.status.status_code is StatusCode.UNSET  # a client error, not ours
    assert "cloudevents.event_id" not in refused.attributes
    assert unavailable.name == "POST /webhooks/shop/{event_type}"
    assert unavailable.attributes["http.route"] == "/webhooks/shop/{event_type}"
    assert unavailable.attributes["url.path"] == "/webhooks/shop/order.paid"
    assert unavailable.attributes["http.response.status_code"] == 503
    assert unavailable.attributes["error.type"] == "503"
    assert unavailable.status.status_code is StatusCode.ERROR
    assert hex_ids(unavailable)[0] == TRACE


async def test_tracing_off_carries_a_valid_incoming_trace_context_as_it_came(
    memory_tracing: MemoryTracing,
) -> None:
    app, _, producer, _ = build([shop()])  # no tracer: tracing off
    assert (await post(app, traceparent=TRACEPARENT, tracestate="a=b")).status_code == 202
    assert (await post(app, traceparent=TRACEPARENT, tracestate="a=b\tc")).status_code == 202
    assert (await post(app, traceparent="00-nonsense", tracestate="a=b")).status_code == 202
    assert (await post(app)).status_code == 202
    assert memory_tracing.spans == []
    first, unclean_state, invalid, none = producer.records
    assert trace_headers(first) == {H_TRACEPARENT: TRACEPARENT, H_TRACESTATE: "a=b"}
    assert trace_headers(unclean_state) == {H_TRACEPARENT: TRACEPARENT}
    assert trace_headers(invalid) == {}
    assert trace_headers(none) == {}
    # The same event either way: the trace context is not part of its identity.
    assert first.header("ce_id") == extract.event_id("shop", "POST", b"", BODY)
    assert none.header("ce_id") == first.header("ce_id")
