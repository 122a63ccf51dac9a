"""Bad input over real sockets: hypothesis-generated raw HTTP requests and schemathesis
against the OpenAPI document, both at a real uvicorn server running the webhook port.

Properties: no 5xx and no crash whatever arrives; every request to a configured path
that is not correctly signed is a 401 and never reaches Kafka.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import string
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from gateway.verifiers.crystallize import sign_hmac
from tests.gateway.live import PATH, SECRET, LiveServer, live_server, read_response, status_of

SOURCE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-"
SEGMENT = string.ascii_letters + string.digits + "._~-"
# Header values: the bytes RFC 9110 allows (visible ASCII, space, tab and obs-text
# 0x80-0xff, so not UTF-8); control characters are the malformed test's business.
_ALLOWED = frozenset([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
VALUE_BYTES = st.binary(max_size=300).map(
    lambda b: bytes(c for c in b if c in _ALLOWED).strip(b" \t")
)
FRAMING = ("content-length", "transfer-encoding", "connection", "expect", "upgrade")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # The API docs on this port too: schemathesis reads the document from it.
    limits = {"header_timeout_seconds": 2, "body_timeout_seconds": 2}
    with live_server({"http": limits, "api_docs": "webhook"}) as s:
        yield s


def exchange(server: LiveServer, raw: bytes, *, half_close: bool = False) -> bytes:
    with server.connect() as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        # Generous: a 2-core CI machine under load must not turn a slow answer into
        # "no answer" (the server's own timeouts are 2 s and answer 408, not silence).
        return read_response(sock, within=15.0)


def signatures(body: bytes) -> st.SearchStrategy[bytes | None]:
    """Anything but the right signature: none, garbage, another body's, another key's."""
    return st.one_of(
        st.none(),
        VALUE_BYTES,
        st.text("0123456789abcdef", min_size=64, max_size=64).map(str.encode),
        st.binary(min_size=1, max_size=64).map(lambda other: sign_hmac(SECRET, other).encode()),
        st.just(hmac.new(b"wrong-key", body, hashlib.sha256).hexdigest().encode()),
        st.just(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
    ).filter(lambda sig: sig != sign_hmac(SECRET, body).encode())


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str, str, bool]:
    """(raw request, method, path, truncated)."""
    method = draw(
        st.one_of(
            st.sampled_from([*SOURCE_METHODS, "HEAD", "OPTIONS", "TRACE", "FOO"]),
            st.text(TOKEN, min_size=1, max_size=10),
        )
    )
    path = draw(
        st.one_of(
            st.just(PATH),
            st.text(SEGMENT, min_size=1, max_size=20).map(lambda seg: f"{PATH}/{seg}"),
            st.sampled_from(["/", "/openapi.json", "/docs", "/metrics", "/webhooks", PATH + "/"]),
            st.text(SEGMENT + "/%", max_size=40).map(lambda p: "/" + p),
        )
    )
    query = draw(st.one_of(st.just(""), st.text(SEGMENT + "=&", max_size=30).map("?{}".format)))
    body = draw(
        st.one_of(
            st.binary(max_size=2048),
            st.just(b'{"order": {"get": {"id": "o-1"}}}'),
            st.text(max_size=200).map(str.encode),
        )
    )
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    sig = draw(signatures(body))
    if sig is not None:
        headers.append((b"X-Crystallize-Signature", sig))
        if draw(st.booleans()):  # a duplicate signature header
            headers.append((b"x-crystallize-signature", sign_hmac(SECRET, body).encode()))
    names = st.one_of(
        st.text(TOKEN, min_size=1, max_size=30),
        st.sampled_from(["Content-Type", "X-Forwarded-Host", "X-Forwarded-Proto", "Accept"]),
    ).filter(lambda n: n.lower() not in FRAMING and n.lower() != "x-crystallize-signature")
    headers += draw(st.lists(st.tuples(names.map(str.encode), VALUE_BYTES), max_size=12))
    truncated = draw(st.booleans()) and len(body) > 0
    chunked = not truncated and draw(st.booleans())
    if chunked:
        headers.append((b"Transfer-Encoding", b"chunked"))
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        # Truncated: the declared length is more than what is sent before the client
        # closes its side.
        declared = len(body) + (draw(st.integers(1, 1000)) if truncated else 0)
        headers.append((b"Content-Length", str(declared).encode()))
        payload = body
    head = f"{method} {path}{query} HTTP/1.1\r\n".encode()
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + payload, method, path, truncated


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_random_requests_never_5xx_and_unsigned_is_401(
    server: LiveServer, request: tuple[bytes, str, str, bool]
) -> None:
    raw, method, path, truncated = request
    before = len(server.producer.records)
    response = exchange(server, raw, half_close=truncated)
    status = status_of(response)
    assert server.alive
    assert len(server.producer.records) == before, "an unsigned request reached Kafka"
    if truncated:
        assert status is None or status < 500, response[:300]
        return
    assert status is not None, f"no answer to {raw[:200]!r}"
    assert status < 500, response[:300]
    to_source = path == PATH or (
        path.startswith(PATH + "/") and "/" not in path[len(PATH) + 1 :] and path != PATH + "/"
    )
    if to_source and method in SOURCE_METHODS:
        assert status == 401, response[:300]
        assert b"application/problem+json" in response


def test_fuzzing_saw_no_server_error(server: LiveServer) -> None:
    """Runs after the fuzz test (same module server): no 5xx was ever counted, and a
    correctly signed request still gets through (the server is healthy and the fuzz
    test's 401s were not the only possible answer)."""
    body = b'{"order": {"get": {"id": "o-1"}}}'
    raw = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Crystallize-Signature: {sign_hmac(SECRET, body)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    assert status_of(exchange(server, raw)) == 202
    for status in ("500", "502", "503", "504"):
        for source in ("", "crystallize"):
            assert (
                server.metric("webhookgw_ingress_requests_total", source=source, status=status) == 0
            )


def test_huge_and_many_headers_refused_431(server: LiveServer) -> None:
    huge = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000
    response = exchange(server, huge + b"\r\n\r\n")
    assert status_of(response) == 431
    assert b"application/problem+json" in response
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    response = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status_of(response) == 431
    assert server.metric("webhookgw_ingress_http_refused_total", reason="header_too_large") >= 2
    assert server.producer.records == [] or all(
        r.value == b'{"order": {"get": {"id": "o-1"}}}' for r in server.producer.records
    )


def test_malformed_http_is_a_problem_400(server: LiveServer) -> None:
    for raw in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET\r\n\r\n"):
        response = exchange(server, raw)
        assert status_of(response) == 400, (raw, response)
        assert b"application/problem+json" in response
    assert server.alive


# --- schemathesis against the OpenAPI document of the running server ----------------


def test_openapi_operations_with_schemathesis(server: LiveServer) -> None:
    """Every documented operation with schemathesis-generated (unsigned) input: the
    documented status codes, content types and body schemas, never a 5xx; requests to
    the webhook paths are 401 (unsigned) or 405 (method)."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid OpenAPI
        operations.append(result.ok())
    assert len(operations) == 2 * len(SOURCE_METHODS)  # plain and {event_type} paths

    for operation in operations:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call_and_validate()
            assert response.status_code in (401, 405), response.text

        check()
    assert len(server.producer.records) <= 1  # only test_fuzzing_saw_no_server_error's
