"""The webhook port through HTTP (httpx on the ASGI app), with a fake producer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway import extract
from gateway.app import DRAIN_BYTES, NOT_JSON, TOO_DEEP, GatewayApp, parse_json
from gateway.producer import Headers, ProduceError
from gateway.server import create_admin_app
from gateway.verifiers.crystallize import sign_jwt
from tests.gateway.support import (
    SIG_HEADER,
    BodyHmacVerifier,
    FakeProducer,
    build,
    metric,
    sign,
)

SECRET = "test-secret-0123456789"
OLD_SECRET = "old-secret-0123456789"
BODY = b'{"order":{"get":{"id":"ord-1","total":1.50}}}'


def shop(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET, OLD_SECRET],
        "methods": ["GET", "POST"],
        "key": {"pointers": ["/order/get/id"], "query_param": "id"},
        "forward_headers": [SIG_HEADER, "x-extra"],
        "body_limit": 1000,
    }
    base.update(overrides)
    return base


def client(app: GatewayApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")


def requests_total(registry: CollectorRegistry, source: str, status: int) -> float:
    return metric(registry, "webhookgw_ingress_requests_total", source=source, status=str(status))


def assert_problem(response: httpx.Response, status: int, slug: str, instance: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:webhook-gateway:problem:{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == instance
    assert SECRET not in response.text


async def test_accepted_writes_record_with_contract_headers() -> None:
    app, _, producer, registry = build([shop()])
    async with client(app) as c:
        r = await c.post(
            "/webhooks/shop?concern=order&event=created",
            content=BODY,
            headers={SIG_HEADER: sign(SECRET, BODY), "X-Extra": "e", "X-Other": "no"},
        )
    assert r.status_code == 202
    assert r.headers["content-type"] == "application/json"
    event_id = extract.event_id("shop", "POST", b"concern=order&event=created", BODY)
    assert r.json() == {"id": event_id}
    (record,) = producer.records
    assert (record.topic, record.key, record.value) == ("webhooks.raw", b"ord-1", BODY)
    names = [name for name, _ in record.headers]
    assert names == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
        "ce_httpmethod",
        "ce_httpquery",
        "ce_idorigin",
        "http-header-x-test-signature",
        "http-header-x-extra",
    ]
    assert record.header("ce_id") == event_id
    assert record.header("ce_idorigin") == "derived"  # the test verifier reports no id
    assert record.header("ce_type") == "order.created"
    assert record.header("ce_subject") == "ord-1"
    assert record.header("ce_httpquery") == "concern=order&event=created"
    assert record.header("http-header-x-extra") == "e"
    assert producer.deadlines == [5.0]
    assert requests_total(registry, "shop", 202) == 1
    assert metric(registry, "webhookgw_ingress_secret_matched_total", source="shop", index="0") == 1
    assert metric(registry, "webhookgw_ingress_body_size_bytes_sum", source="shop") == len(BODY)
    assert metric(registry, "webhookgw_ingress_in_flight_requests") == 0


async def test_rotated_secret_and_delivery_id_and_path_event_type() -> None:
    app, _, producer, registry = build(
        [shop(verifier={"type": "body-hmac", "delivery_header": "x-delivery"})]
    )
    async with client(app) as c:
        r = await c.put(
            "/webhooks/shop/order.updated",
            content=BODY,
            headers={SIG_HEADER: sign(OLD_SECRET, BODY), "x-delivery": "d-77"},
        )
        assert r.status_code == 405  # PUT not configured for this source
        r = await c.post(
            "/webhooks/shop/order.updated",
            content=BODY,
            headers={SIG_HEADER: sign(OLD_SECRET, BODY), "x-delivery": "d-77"},
        )
    assert r.status_code == 202
    # The delivery header is not signed: the id is the digest of the signed body, and
    # the provider's id rides along.
    assert r.json() == {"id": extract.digest_id("shop", BODY)}
    assert producer.records[0].header("ce_idorigin") == "digest"
    assert producer.records[0].header("ce_providerid") == "d-77"
    assert producer.records[0].header("ce_type") == "order.updated"
    assert metric(registry, "webhookgw_ingress_secret_matched_total", source="shop", index="1") == 1


async def test_get_with_empty_body_keys_by_query_id() -> None:
    app, _, producer, _ = build([shop()])
    async with client(app) as c:
        r = await c.get(
            "/webhooks/shop?id=ent-9&event=published", headers={SIG_HEADER: sign(SECRET, b"")}
        )
    assert r.status_code == 202
    record = producer.records[0]
    assert (record.key, record.value) == (b"ent-9", b"")
    assert record.header("ce_type") == "published"
    assert record.header("ce_httpmethod") == "GET"
    assert record.header("content-type") == "application/json"


async def test_key_falls_back_to_event_id_and_counts() -> None:
    app, _, producer, registry = build([shop()])
    body = b'{"something":"else"}'
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)})
    assert r.status_code == 202
    assert producer.records[0].key == r.json()["id"].encode()
    assert producer.records[0].header("ce_type") == "something"
    assert metric(registry, "webhookgw_ingress_key_fallback_total", source="shop") == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing"), ({SIG_HEADER: "0" * 64}, "mismatch")],
)
async def test_unauthorized(headers: dict[str, str], reason: str) -> None:
    app, _, producer, registry = build([shop()])
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=BODY, headers=headers)
    assert_problem(r, 401, "unauthorized", "/webhooks/shop")
    assert producer.records == []
    assert requests_total(registry, "shop", 401) == 1
    assert (
        metric(
            registry, "webhookgw_ingress_verification_failures_total", source="shop", reason=reason
        )
        == 1
    )


async def test_verifier_bug_is_401_not_500() -> None:
    app, _, _, registry = build([shop(verifier={"type": "exploding"})])
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=BODY)
    assert_problem(r, 401, "unauthorized", "/webhooks/shop")
    assert "bug in verifier" not in r.text
    assert (
        metric(
            registry,
            "webhookgw_ingress_verification_failures_total",
            source="shop",
            reason="internal",
        )
        == 1
    )


class BrokenProducer(FakeProducer):
    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        raise RuntimeError("a bug with the secret " + SECRET)


async def test_a_handler_bug_is_the_shared_500_problem_and_says_nothing_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _, _, registry = build([shop()], producer=BrokenProducer())
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=BODY, headers={SIG_HEADER: sign(SECRET, BODY)})
    assert_problem(r, 500, "internal-error", "/webhooks/shop")
    assert "bug" not in r.text
    assert requests_total(registry, "shop", 500) == 1
    assert "unexpected error handling a webhook" in caplog.text


async def test_not_found_and_method_not_allowed() -> None:
    app, _, _, registry = build([shop()], {"api_docs": "webhook"})
    async with client(app) as c:
        r404 = await c.post("/webhooks/unknown", content=BODY)
        r404b = await c.post("/webhooks/shop/a/b", content=BODY)
        r405 = await c.delete("/webhooks/shop")
        docs405 = await c.post("/openapi.json")
    assert_problem(r404, 404, "not-found", "/webhooks/unknown")
    assert_problem(r404b, 404, "not-found", "/webhooks/shop/a/b")
    assert_problem(r405, 405, "method-not-allowed", "/webhooks/shop")
    assert r405.headers["allow"] == "GET, POST"
    assert_problem(docs405, 405, "method-not-allowed", "/openapi.json")
    assert "GET" in docs405.headers["allow"]
    assert requests_total(registry, "", 404) == 2
    assert requests_total(registry, "shop", 405) == 1
    assert requests_total(registry, "", 405) == 1


async def test_declared_length_far_over_limit_is_413_before_reading() -> None:
    app, _, producer, registry = build([shop(body_limit=10)])
    read = 0
    size = DRAIN_BYTES + 1

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read += 1
        yield b"x" * size

    async with client(app) as c:
        r = await c.post(
            "/webhooks/shop",
            content=body(),
            headers={"content-length": str(size), SIG_HEADER: sign(SECRET, b"x" * size)},
        )
    assert_problem(r, 413, "body-too-large", "/webhooks/shop")
    assert r.headers["connection"] == "close"
    assert read == 0
    assert producer.records == []
    assert requests_total(registry, "shop", 413) == 1


async def test_declared_length_slightly_over_is_drained_and_connection_kept() -> None:
    app, _, _, _ = build([shop(body_limit=10)])
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=b"x" * 11)
    assert_problem(r, 413, "body-too-large", "/webhooks/shop")
    assert "connection" not in r.headers


async def test_streamed_body_over_limit_stops_reading() -> None:
    app, _, producer, _ = build([shop(body_limit=1000)])
    chunks_read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for _ in range(1000):
            chunks_read += 1
            yield b"y" * 300

    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=body())
    assert_problem(r, 413, "body-too-large", "/webhooks/shop")
    assert r.headers["connection"] == "close"
    # 4 chunks cross 1000 bytes; then at most DRAIN_BYTES more are read and discarded,
    # never the whole 300 kB stream.
    assert chunks_read == 4 + DRAIN_BYTES // 300 + 1
    assert producer.records == []


async def test_body_exactly_at_limit_is_accepted() -> None:
    body = b'{"id":"' + b"z" * 92 + b'"}'
    app, _, producer, _ = build([shop(body_limit=len(body))])
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)})
    assert r.status_code == 202
    assert producer.records[0].value == body


async def test_invalid_json_is_400_unless_allowed() -> None:
    body = b"not json {"
    headers = {SIG_HEADER: sign(SECRET, body)}
    app, _, producer, registry = build([shop(), shop(name="raw", path="/raw", require_json=False)])
    async with client(app) as c:
        r400 = await c.post("/webhooks/shop", content=body, headers=headers)
        r202 = await c.post("/raw", content=body, headers=headers)
    assert_problem(r400, 400, "invalid-body", "/webhooks/shop")
    assert requests_total(registry, "shop", 400) == 1
    assert r202.status_code == 202
    assert [r.value for r in producer.records] == [body]


@pytest.mark.parametrize(
    "failure",
    [ProduceError("timeout", "Kafka did not acknowledge within 5 s"), ProduceError("error", "x")],
)
async def test_produce_failure_is_503_with_retry_after(failure: ProduceError) -> None:
    app, _, _, registry = build(
        [shop()], gateway={"retry_after_seconds": 7}, producer=FakeProducer(fail=failure)
    )
    async with client(app) as c:
        r = await c.post("/webhooks/shop", content=BODY, headers={SIG_HEADER: sign(SECRET, BODY)})
    assert_problem(r, 503, "unavailable", "/webhooks/shop")
    assert r.headers["retry-after"] == "7"
    assert requests_total(registry, "shop", 503) == 1
    assert (
        metric(
            registry,
            "webhookgw_ingress_produce_failures_total",
            source="shop",
            reason=failure.reason,
        )
        == 1
    )


async def test_in_flight_bound_answers_503() -> None:
    gate = asyncio.Event()
    app, ingress, producer, registry = build(
        [shop()], gateway={"max_in_flight": 2}, producer=FakeProducer(gate=gate)
    )
    headers = {SIG_HEADER: sign(SECRET, BODY)}
    async with client(app) as c:
        first = [
            asyncio.create_task(c.post("/webhooks/shop", content=BODY, headers=headers))
            for _ in range(2)
        ]
        async with asyncio.timeout(5):
            while ingress.state.in_flight < 2:  # noqa: ASYNC110 (polling plain state)
                await asyncio.sleep(0.01)
        assert metric(registry, "webhookgw_ingress_in_flight_requests") == 2
        over = await c.post("/webhooks/shop", content=BODY, headers=headers)
        gate.set()
        done = await asyncio.gather(*first)
    assert_problem(over, 503, "unavailable", "/webhooks/shop")
    assert over.headers["retry-after"] == "1"
    assert [r.status_code for r in done] == [202, 202]
    assert len(producer.records) == 2
    assert (
        metric(
            registry, "webhookgw_ingress_produce_failures_total", source="shop", reason="overloaded"
        )
        == 1
    )


async def test_public_url_resolution() -> None:
    app, _, _, _ = build(
        [
            shop(),
            shop(name="pub", path="/p", public_url="https://hooks.example.com/in/pub/"),
        ],
        gateway={"trusted_proxies": ["127.0.0.0/8"]},
    )
    untrusted_app, _, _, _ = build([shop()], gateway={"trusted_proxies": ["10.0.0.0/8"]})
    forwarded = {"x-forwarded-proto": "https, http", "x-forwarded-host": "public.example"}
    BodyHmacVerifier.seen.clear()
    async with client(app) as c:
        await c.post("/webhooks/shop/order.created?a=1", content=BODY, headers=forwarded)
        await c.post("/p/ev?x=%20y", content=BODY, headers=forwarded)
    async with client(untrusted_app) as c:
        await c.post("/webhooks/shop?a=1", content=BODY, headers=forwarded)
    urls = [req.url for req in BodyHmacVerifier.seen]
    assert urls == [
        "https://public.example/webhooks/shop/order.created?a=1",
        "https://hooks.example.com/in/pub/ev?x=%20y",
        "http://gw.test/webhooks/shop?a=1",
    ]
    seen = BodyHmacVerifier.seen[0]
    assert (seen.method, seen.path, seen.query_string) == (
        "POST",
        "/webhooks/shop/order.created",
        "a=1",
    )
    assert seen.body == BODY
    assert seen.headers["x-forwarded-host"] == "public.example"


async def test_openapi_documents_webhook_paths() -> None:
    app, _, _, _ = build([shop()], {"api_docs": "webhook"})
    async with client(app) as c:
        r = await c.get("/openapi.json")
        docs = await c.get("/docs")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert set(paths["/webhooks/shop"]) == {"get", "post"}
    assert set(paths["/webhooks/shop/{event_type}"]) == {"get", "post"}
    post = paths["/webhooks/shop"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "405", "408", "413", "503"}
    assert "Problem" in r.json()["components"]["schemas"]
    assert docs.status_code == 200


async def test_api_docs_are_on_the_admin_port_by_default_and_nowhere_when_off() -> None:
    from gateway.openapi import docs_routes

    app, ingress, producer, registry = build([shop()])
    async with client(app) as c:
        for path in ("/openapi.json", "/docs"):
            assert_problem(await c.get(path), 404, "not-found", path)
    admin = create_admin_app(ingress.state, producer, registry, None, docs_routes(ingress.sources))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin), base_url="http://admin"
    ) as c:
        document = await c.get("/openapi.json")
        page = await c.get("/docs")
    assert set(document.json()["paths"]["/webhooks/shop"]) == {"get", "post"}
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    off, _, _, _ = build([shop()], {"api_docs": "off"})
    async with client(off) as c:
        assert (await c.get("/openapi.json")).status_code == 404


def test_parse_json_accepts_numbers_orjson_refuses() -> None:
    assert parse_json(b'{"a":1e400}') == (None, {"a": float("inf")})
    assert parse_json(b'{"a":123456789012345678901234567890}')[0] is None
    assert parse_json(b"NaN") == (NOT_JSON, None)
    assert parse_json(b"\xff") == (NOT_JSON, None)
    assert parse_json(b"\xef\xbb\xbf{}") == (NOT_JSON, None)
    assert parse_json(b"[" * 1100 + b"]" * 1100) == (TOO_DEEP, None)


async def test_admin_endpoints() -> None:
    _, ingress, producer, registry = build([shop()])
    admin = create_admin_app(ingress.state, producer, registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin), base_url="http://admin"
    ) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).json() == {"status": "ready"}
        assert "webhookgw_ingress_ready 1.0" in (await c.get("/metrics")).text
        producer.ready = "topics missing: webhooks.raw"
        assert "webhookgw_ingress_ready 0.0" in (await c.get("/metrics")).text
        not_ready = await c.get("/readyz")
        assert_problem(not_ready, 503, "unavailable", "/readyz")
        assert "topics missing: webhooks.raw" in not_ready.json()["detail"]
        producer.ready = None
        ingress.state.shutting_down = True
        assert "shutting down" in (await c.get("/readyz")).json()["detail"]
        ingress.count("shop", 202)
        metrics = await c.get("/metrics")
        assert 'webhookgw_ingress_requests_total{source="shop",status="202"} 1.0' in metrics.text
        assert_problem(await c.get("/nope"), 404, "not-found", "/nope")


def test_problem_body_shape() -> None:
    from webhook_common import problem

    p = problem.method_not_allowed("PUT", ("GET", "POST"))
    assert orjson.loads(p.body("/x")) == {
        "type": "urn:webhook-gateway:problem:method-not-allowed",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "method PUT is not allowed here; allowed: GET, POST",
        "instance": "/x",
    }
    assert p.headers == ((b"allow", b"GET, POST"),)


async def test_unencodable_or_huge_ids_are_hashed_not_a_500() -> None:
    # A lone surrogate is valid JSON (orjson refuses it, the fallback parser accepts
    # it) but not UTF-8; a 10 kB id is valid but no Kafka key. Both must still be 202.
    app, _, producer, _ = build([shop(body_limit=20_000)])
    bodies = [
        b'{"order":{"get":{"id":"ord-\\ud800"}}}',
        b'{"order":{"get":{"id":"' + b"x" * 10_000 + b'"}}}',
    ]
    async with client(app) as c:
        for body in bodies:
            r = await c.post(
                "/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)}
            )
            assert r.status_code == 202, r.text
    keys = [record.key for record in producer.records]
    assert len(keys) == 2
    assert all(key.startswith(b"sha256:") and len(key) == 71 for key in keys)
    assert keys[0] != keys[1]


async def test_json_nested_too_deeply_to_parse_is_400_not_500() -> None:
    # Valid JSON, but past orjson's 1024 levels and the standard library's recursion limit.
    body = b"[" * 1100 + b"]" * 1100
    headers = {SIG_HEADER: sign(SECRET, body)}
    app, _, producer, registry = build(
        [
            shop(body_limit=10_000),
            shop(name="raw", path="/raw", require_json=False, body_limit=10_000),
        ]
    )
    async with client(app) as c:
        r400 = await c.post("/webhooks/shop", content=body, headers=headers)
        r202 = await c.post("/raw", content=body, headers=headers)
    assert_problem(r400, 400, "body-too-deep", "/webhooks/shop")
    assert requests_total(registry, "shop", 400) == 1
    assert requests_total(registry, "shop", 500) == 0
    assert r202.status_code == 202
    assert [r.value for r in producer.records] == [body]


@pytest.mark.parametrize(
    "segment",
    [
        "%00evil",
        "order%0D%0AX-Injected:%20yes",
        "a%09b",
        "%7F",
        "%C3%A9",
        "order%2Ecreated",
        "%25",
        "a;b",
    ],
)
async def test_event_type_segment_must_be_plain_path_characters(segment: str) -> None:
    app, _, producer, registry = build([shop()])
    async with client(app) as c:
        r = await c.post(
            f"/webhooks/shop/{segment}", content=BODY, headers={SIG_HEADER: sign(SECRET, BODY)}
        )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:webhook-gateway:problem:invalid-path"
    assert producer.records == []
    assert requests_total(registry, "shop", 400) == 1


async def test_a_percent_encoded_alias_of_a_source_path_is_not_routed() -> None:
    # Routing and the URL the verifier checks read the same raw path: a token minted for
    # the alias cannot be delivered to the source the alias would decode to.
    source = {"name": "crystallize", "verifier": {"type": "crystallize", "mode": "jwt"}}
    app, _, producer, registry = build([{**source, "secrets": [SECRET]}])
    async with client(app) as c:
        for path in ("/webhooks/%63rystallize", "/webhooks%2Fcrystallize"):
            token = sign_jwt(SECRET, f"http://gw.test{path}", "POST", BODY)
            r = await c.post(path, content=BODY, headers={"x-crystallize-signature": token})
            assert r.status_code == 404, (path, r.text)
        token = sign_jwt(SECRET, "http://gw.test/webhooks/crystallize", "POST", BODY)
        r = await c.post(
            "/webhooks/crystallize", content=BODY, headers={"x-crystallize-signature": token}
        )
        assert r.status_code == 202
    assert len(producer.records) == 1
    assert requests_total(registry, "", 404) == 2
