"""Request values that the webhook port copies into Kafka record headers: a control
character (C0 with NUL and TAB, DEL, C1) or an over-long event type is refused with a
400 naming where it came from; the record key is hashed instead. One test per source."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import GatewayApp
from gateway.extract import MAX_ID_LENGTH
from gateway.verifiers import generic, github, shopify, standard, stripe
from tests.gateway.live import live_server, read_response, status_of
from tests.gateway.support import SIG_HEADER, FakeProducer, build, metric, sign

SECRET = "header-values-secret-0123"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"header-values-key-0123").decode()
BODY = b'{"order":{"get":{"id":"ord-1"}}}'
# Every kind of control character, and one past the length an event type may have.
BAD_TEXT = ["a\x00b", "a\tb", "a\x1fb", "a\x7fb", "a\x85b", "a\x9fb", "x" * (MAX_ID_LENGTH + 1)]
BAD_IDS = ["a\x00b", "a\tb", "a\x7fb", "a\x85b"]


def source(name: str, verifier: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    secrets = [STANDARD_SECRET if verifier["type"] == "standard-webhooks" else SECRET]
    base: dict[str, Any] = {
        "name": name,
        "path": f"/webhooks/{name}",
        "verifier": verifier,
        "secrets": secrets,
        "methods": ["GET", "POST"],
        "key": {"pointers": ["/order/get/id", "/id"], "query_param": "id"},
        "forward_headers": ["x-extra"],
    }
    base.update(overrides)
    return base


SOURCES = [
    source("hmac", {"type": "body-hmac"}),
    source("github", {"type": "github"}),
    source("shopify", {"type": "shopify"}),
    source("stripe", {"type": "stripe"}),
    source("standard", {"type": "standard-webhooks"}),
    source(
        "generic",
        {"type": "generic-hmac", "header": "x-sig", "id_header": "x-id", "type_header": "x-type"},
    ),
]


def built() -> tuple[GatewayApp, FakeProducer, CollectorRegistry]:
    app, _, producer, registry = build(SOURCES)
    return app, producer, registry


def client(app: GatewayApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")


def wire(headers: Mapping[str, str], **changed: str) -> dict[bytes, bytes]:
    """``headers`` (``changed`` replacing some, ``_`` for ``-`` in names) as the bytes
    that an ASGI server decodes (latin-1) back to these strings."""
    merged = {**headers, **{name.replace("_", "-"): value for name, value in changed.items()}}
    return {name.encode(): value.encode("latin-1") for name, value in merged.items()}


def json_text(text: str) -> bytes:
    """``text`` as a JSON string literal (control characters escaped, as JSON requires)."""
    escaped = "".join(c if " " <= c < "\x7f" else f"\\u{ord(c):04x}" for c in text)
    return b'"' + escaped.encode() + b'"'


def assert_refused(
    r: httpx.Response, slug: str, names: str, producer: FakeProducer, registry: Any, name: str
) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == f"urn:webhook-gateway:problem:{slug}"
    assert problem["title"] == "Bad Request"
    assert names in problem["detail"], problem["detail"]
    assert problem["instance"].startswith(f"/webhooks/{name}")
    assert producer.records == []
    requests = "webhookgw_ingress_requests_total"
    assert metric(registry, requests, source=name, status="400") == 1


@pytest.mark.parametrize("value", BAD_TEXT)
async def test_github_event_header(value: str) -> None:
    app, producer, registry = built()
    headers = wire(github.sign(BODY, SECRET, delivery="d-1"), x_github_event=value)
    async with client(app) as c:
        r = await c.post("/webhooks/github", content=BODY, headers=headers)
    assert_refused(r, "invalid-header", "x-github-event", producer, registry, "github")


@pytest.mark.parametrize("value", BAD_TEXT)
async def test_shopify_topic_header(value: str) -> None:
    app, producer, registry = built()
    headers = wire(shopify.sign(BODY, SECRET, webhook_id="w-1"), x_shopify_topic=value)
    async with client(app) as c:
        r = await c.post("/webhooks/shopify", content=BODY, headers=headers)
    assert_refused(r, "invalid-header", "x-shopify-topic", producer, registry, "shopify")


@pytest.mark.parametrize("value", BAD_TEXT)
async def test_generic_hmac_type_header(value: str) -> None:
    app, producer, registry = built()
    cfg = generic.GenericHmacConfig(header="x-sig", id_header="x-id", type_header="x-type")
    headers = wire(generic.sign(BODY, SECRET, cfg), x_type=value)
    async with client(app) as c:
        r = await c.post("/webhooks/generic", content=BODY, headers=headers)
    assert_refused(r, "invalid-header", "x-type", producer, registry, "generic")


@pytest.mark.parametrize("value", BAD_TEXT)
async def test_stripe_type_from_the_signed_body(value: str) -> None:
    app, producer, registry = built()
    body = b'{"id":"evt_1","type":' + json_text(value) + b"}"
    async with client(app) as c:
        r = await c.post("/webhooks/stripe", content=body, headers=stripe.sign(body, SECRET))
    assert_refused(r, "invalid-event-type", "verifier", producer, registry, "stripe")


@pytest.mark.parametrize("value", BAD_TEXT)
async def test_standard_webhooks_type_from_the_signed_body(value: str) -> None:
    app, producer, registry = built()
    body = b'{"type":' + json_text(value) + b"}"
    headers = standard.sign(body, STANDARD_SECRET, msg_id="msg_1")
    async with client(app) as c:
        r = await c.post("/webhooks/standard", content=body, headers=headers)
    assert_refused(r, "invalid-event-type", "verifier", producer, registry, "standard")


@pytest.mark.parametrize("parameter", ["concern", "event"])
@pytest.mark.parametrize("escaped", ["%00", "a%09b", "%7F", "%C2%85", "x" * (MAX_ID_LENGTH + 1)])
async def test_query_parameters_of_the_event_type(parameter: str, escaped: str) -> None:
    app, producer, registry = built()
    async with client(app) as c:
        r = await c.post(
            f"/webhooks/hmac?{parameter}={escaped}",
            content=BODY,
            headers={SIG_HEADER: sign(SECRET, BODY)},
        )
    assert_refused(r, "invalid-query", f"'{parameter}'", producer, registry, "hmac")


async def test_query_parameters_joined_past_the_length_limit() -> None:
    app, producer, registry = built()
    half = "x" * (MAX_ID_LENGTH // 2)
    async with client(app) as c:
        r = await c.post(
            f"/webhooks/hmac?concern={half}&event={half}",
            content=BODY,
            headers={SIG_HEADER: sign(SECRET, BODY)},
        )
    assert_refused(r, "invalid-query", "'concern' and 'event'", producer, registry, "hmac")


async def test_an_over_long_path_segment() -> None:
    app, producer, registry = built()
    async with client(app) as c:
        r = await c.post(
            "/webhooks/hmac/" + "x" * (MAX_ID_LENGTH + 1),
            content=BODY,
            headers={SIG_HEADER: sign(SECRET, BODY)},
        )
    assert_refused(r, "invalid-path", "longer than", producer, registry, "hmac")


@pytest.mark.parametrize("value", BAD_TEXT)
async def test_the_bodys_first_member_name(value: str) -> None:
    app, producer, registry = built()
    body = b"{" + json_text(value) + b":1}"
    async with client(app) as c:
        r = await c.post("/webhooks/hmac", content=body, headers={SIG_HEADER: sign(SECRET, body)})
    assert_refused(r, "invalid-event-type", "first member", producer, registry, "hmac")


@pytest.mark.parametrize("value", BAD_IDS)
async def test_github_delivery_id_header(value: str) -> None:
    app, producer, registry = built()
    headers = wire(github.sign(BODY, SECRET, event="push"), x_github_delivery=value)
    async with client(app) as c:
        r = await c.post("/webhooks/github", content=BODY, headers=headers)
    assert_refused(r, "invalid-header", "x-github-delivery", producer, registry, "github")


@pytest.mark.parametrize("value", BAD_IDS)
async def test_standard_webhooks_signed_id_header(value: str) -> None:
    app, producer, registry = built()
    body = b'{"type":"user.created"}'
    # Signed over the id's UTF-8 bytes, so sent as those bytes: a C1 character then
    # arrives as its UTF-8 pair, still U+0085 once decoded as latin-1.
    signed = standard.sign(body, STANDARD_SECRET, msg_id=value)
    headers = {k.encode(): v.encode() for k, v in signed.items()}
    async with client(app) as c:
        r = await c.post("/webhooks/standard", content=body, headers=headers)
    assert_refused(r, "invalid-header", "webhook-id", producer, registry, "standard")


@pytest.mark.parametrize("value", BAD_IDS)
async def test_stripe_id_from_the_signed_body(value: str) -> None:
    app, producer, registry = built()
    body = b'{"id":' + json_text(value) + b',"type":"charge.succeeded"}'
    async with client(app) as c:
        r = await c.post("/webhooks/stripe", content=body, headers=stripe.sign(body, SECRET))
    assert_refused(r, "invalid-event-id", "verifier", producer, registry, "stripe")


@pytest.mark.parametrize("value", BAD_IDS)
async def test_content_type_header(value: str) -> None:
    app, producer, registry = built()
    headers = wire({SIG_HEADER: sign(SECRET, BODY), "content-type": value})
    async with client(app) as c:
        r = await c.post("/webhooks/hmac", content=BODY, headers=headers)
    assert_refused(r, "invalid-header", "content-type", producer, registry, "hmac")


@pytest.mark.parametrize("value", BAD_IDS)
async def test_a_forwarded_header(value: str) -> None:
    app, producer, registry = built()
    headers = wire({SIG_HEADER: sign(SECRET, BODY), "x-extra": value})
    async with client(app) as c:
        r = await c.post("/webhooks/hmac", content=BODY, headers=headers)
    assert_refused(r, "invalid-header", "x-extra", producer, registry, "hmac")


@pytest.mark.parametrize("raw", [b"a=\x85", b"a=\x7f", b"a=\x00"])
async def test_the_raw_query_string(raw: bytes) -> None:
    # httpx percent-encodes what it sends; an ASGI server hands raw bytes through.
    app, producer, registry = built()
    answer: list[Any] = []
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if body_sent:
            return {"type": "http.disconnect"}
        body_sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/hmac",
        "raw_path": b"/webhooks/hmac",
        "query_string": raw,
        "headers": [(b"host", b"gw.test"), (SIG_HEADER.encode(), sign(SECRET, BODY).encode())],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert answer[0]["status"] == 400
    response = httpx.Response(400, headers=answer[0]["headers"], content=answer[1]["body"])
    assert_refused(response, "invalid-query", "query string", producer, registry, "hmac")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/webhooks/hmac?id=%00", b""),
        ("/webhooks/hmac?id=a%C2%85", b""),
        ("/webhooks/hmac", b'{"id":' + json_text("a\x00b") + b"}"),
        ("/webhooks/hmac", b'{"id":' + json_text("a\tb") + b"}"),
        ("/webhooks/hmac", b'{"id":' + json_text("x" * 300) + b"}"),
    ],
)
async def test_a_record_key_with_control_characters_is_hashed_not_refused(
    url: str, body: bytes
) -> None:
    app, producer, _ = built()
    async with client(app) as c:
        if body:
            r = await c.post(url, content=body, headers={SIG_HEADER: sign(SECRET, body)})
        else:
            r = await c.get(url, headers={SIG_HEADER: sign(SECRET, b"")})
    assert r.status_code == 202, r.text
    (record,) = producer.records
    assert record.key.startswith(b"sha256:")
    assert len(record.key) == 71
    assert record.header("ce_subject") == record.key.decode()


async def test_ordinary_values_from_every_source_still_pass() -> None:
    app, producer, _ = built()
    longest = "t" * MAX_ID_LENGTH
    async with client(app) as c:
        gh = wire(
            github.sign(BODY, SECRET, delivery="d-1"),
            x_github_event="pull_request",
            content_type="application/json; charset=utf-8",
        )
        sh = wire(shopify.sign(BODY, SECRET, webhook_id="w-1"), x_shopify_topic="orders/create")
        answers = [
            await c.post("/webhooks/github", content=BODY, headers=gh),
            await c.post("/webhooks/shopify", content=BODY, headers=sh),
            await c.post(
                f"/webhooks/hmac?concern=order&event={longest[:200]}",
                content=BODY,
                headers=wire({SIG_HEADER: sign(SECRET, BODY), "x-extra": "caf\xe9 ok"}),
            ),
            await c.post(
                f"/webhooks/hmac/{longest}", content=BODY, headers={SIG_HEADER: sign(SECRET, BODY)}
            ),
            await c.post(
                "/webhooks/hmac?q=%00",  # percent-escapes stay escaped in ce_httpquery
                content=b'{"\xc3\xa9v\xc3\xa9nement":1}',
                headers={SIG_HEADER: sign(SECRET, b'{"\xc3\xa9v\xc3\xa9nement":1}')},
            ),
        ]
    assert [r.status_code for r in answers] == [202] * 5, [r.text for r in answers]
    types = [r.header("ce_type") for r in producer.records]
    assert types == [
        "pull_request",
        "orders/create",
        f"order.{longest[:200]}",
        longest,
        "événement",
    ]
    assert producer.records[0].header("content-type") == "application/json; charset=utf-8"
    assert producer.records[2].header("http-header-x-extra") == "caf\xe9 ok"
    assert producer.records[4].header("ce_httpquery") == "q=%00"


def test_a_c1_byte_in_a_provider_header_over_a_real_socket() -> None:
    # What an HTTP parser lets through: obs-text bytes (0x80-0xff), which the ASGI server
    # decodes as latin-1, so 0x85 arrives as the C1 control character U+0085.
    body = BODY
    headers = github.sign(body, SECRET, delivery="d-1")
    with live_server(source={"verifier": {"type": "github"}, "secrets": [SECRET]}) as server:
        raw = (
            b"POST /webhooks/crystallize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            + b"X-GitHub-Event: push\x85\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
        with server.connect() as sock:
            sock.sendall(raw)
            response = read_response(sock, within=10.0)
        assert status_of(response) == 400, response
        assert b"application/problem+json" in response
        assert b"urn:webhook-gateway:problem:invalid-header" in response
        assert server.producer.records == []
