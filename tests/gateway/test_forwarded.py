"""Forwarded headers through a real uvicorn server: only `gateway.trusted_proxies`
decides whether `X-Forwarded-*` change the URL the verifier checks. uvicorn's own
proxy-header handling (which trusts loopback peers by default) must not rewrite the
scheme or the client address before the gateway sees them."""

from __future__ import annotations

from typing import Any

from gateway.verifiers.crystallize import sign_jwt
from tests.gateway.live import PATH, SECRET, LiveServer, live_server, read_response, status_of

BODY = b'{"order": {"get": {"id": "o-forwarded-1"}}}'


def post(server: LiveServer, token: str, extra: dict[str, str]) -> int | None:
    headers = {
        "Host": f"127.0.0.1:{server.port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(BODY)),
        "X-Crystallize-Signature": token,
        "Connection": "close",
        **extra,
    }
    head = f"POST {PATH} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with server.connect() as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + BODY)
        return status_of(read_response(sock))


def token_for(server: LiveServer, scheme: str, host: str | None = None) -> str:
    url = f"{scheme}://{host or f'127.0.0.1:{server.port}'}{PATH}"
    return sign_jwt(SECRET, url, "POST", BODY)


def test_untrusted_peer_cannot_change_the_scheme_the_verifier_sees() -> None:
    # No trusted proxies: the loopback peer's X-Forwarded-Proto must be ignored, so a
    # token for the plain-http URL verifies and one for https does not.
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    with live_server(source={"verifier": {"type": "crystallize", "mode": "jwt"}}) as server:
        assert post(server, token_for(server, "http"), forwarded) == 202
        assert post(server, token_for(server, "https"), forwarded) == 401
        assert len(server.producer.records) == 1


def test_trusted_proxy_headers_apply_even_with_a_forwarded_for() -> None:
    # The peer (127.0.0.1) is trusted; X-Forwarded-For names someone else. The gateway
    # must judge trust by the real peer, so X-Forwarded-Proto/-Host apply.
    gateway: dict[str, Any] = {"trusted_proxies": ["127.0.0.1/32"]}
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "hooks.example.com",
        "X-Forwarded-For": "203.0.113.9",
    }
    source = {"verifier": {"type": "crystallize", "mode": "jwt"}}
    with live_server(gateway=gateway, source=source) as server:
        assert post(server, token_for(server, "https", "hooks.example.com"), forwarded) == 202
        assert post(server, token_for(server, "http"), forwarded) == 401
        assert len(server.producer.records) == 1
