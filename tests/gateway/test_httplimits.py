"""HTTP limits of the webhook port over real sockets: slow clients time out, oversized
heads and bodies are refused before they are read, connections are bounded."""

from __future__ import annotations

import socket
import time

from gateway.verifiers.crystallize import sign_hmac
from tests.gateway.live import PATH, SECRET, live_server, read_response, status_of

LIMITS = {
    "header_timeout_seconds": 0.5,
    "body_timeout_seconds": 0.5,
    "keep_alive_seconds": 0.5,
    "max_header_bytes": 4096,
}


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_idle_connection_gets_408_and_is_closed() -> None:
    with live_server({"http": LIMITS}) as server, server.connect() as sock:
        response = read_response(sock, within=5)
        assert status_of(response) == 408
        assert b"header-timeout" in response
        assert closed_by_server(sock)
        assert server.metric("webhookgw_ingress_http_refused_total", reason="header_timeout") == 1
        assert (
            server.wait_metric(1, "webhookgw_ingress_requests_total", source="", status="408") == 1
        )


def test_slowloris_headers_time_out() -> None:
    """Headers dripped one byte at a time never complete the head within the limit."""
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: {'a' * 200}\r\n".encode()
    with live_server({"http": LIMITS}) as server, server.connect() as sock:
        started = time.monotonic()
        sent = 0
        try:
            for byte in head:
                sock.send(bytes([byte]))
                sent += 1
                time.sleep(0.01)
                if time.monotonic() - started > 5:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < len(head), "the server waited for the whole dripped head"
        assert server.metric("webhookgw_ingress_http_refused_total", reason="header_timeout") == 1
        assert server.producer.records == []


def test_slow_body_gets_408() -> None:
    with live_server({"http": LIMITS}) as server, server.connect() as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode() + b"{" * 10
        )
        response = read_response(sock, within=5)
        assert status_of(response) == 408
        assert b"body-timeout" in response
        assert b"connection: close" in response.lower()
        assert server.metric("webhookgw_ingress_body_timeouts_total", source="crystallize") == 1
        assert (
            server.wait_metric(
                1, "webhookgw_ingress_requests_total", source="crystallize", status="408"
            )
            == 1
        )


def test_idle_keep_alive_connection_is_closed() -> None:
    body = b'{"id": "x"}'
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Crystallize-Signature: {sign_hmac(SECRET, body)}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with live_server({"http": LIMITS}) as server, server.connect() as sock:
        sock.sendall(request)
        assert status_of(read_response(sock)) == 202
        assert closed_by_server(sock, within=5)


def test_declared_oversized_body_refused_without_reading_it() -> None:
    limit = 10_000
    with live_server({"http": LIMITS}, {"body_limit": limit}) as server, server.connect() as sock:
        head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
        sock.sendall(head.encode())
        response = read_response(sock)
        assert status_of(response) == 413
        assert b"application/problem+json" in response
        assert server.bytes_received == len(head)  # not one byte of the body was read


def test_streamed_oversized_body_refused_once_over_the_limit() -> None:
    """Chunked, no declared length: the server stops at the limit. What it read is the
    limit plus at most the transport's buffer, not the 10 MiB the client tries to send:
    uvicorn pauses reading once it holds more than 64 KiB unread, and asyncio's socket
    transport reads at most 256 KiB per call, so one read can overshoot the pause point."""
    limit = 10_000
    with live_server({"http": LIMITS}, {"body_limit": limit}) as server, server.connect() as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n" % 8192 + b"a" * 8192 + b"\r\n"
        sent = 0
        sock.settimeout(2)
        try:
            while sent < 10 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        response = read_response(sock)
        assert status_of(response) == 413
        assert server.bytes_received <= limit + 64 * 1024 + 256 * 1024
        assert server.bytes_received < sent
        assert server.metric("webhookgw_ingress_body_size_bytes_count", source="crystallize") == 0


def test_connections_over_the_limit_are_closed_at_once() -> None:
    with live_server(
        {"http": {**LIMITS, "header_timeout_seconds": 5, "max_connections": 3}}
    ) as server:
        socks = [server.connect() for _ in range(6)]
        try:
            closed = sum(closed_by_server(s, within=0.5) for s in socks)
            assert closed == 3
            assert (
                server.metric("webhookgw_ingress_http_refused_total", reason="too_many_connections")
                == 3
            )
        finally:
            for s in socks:
                s.close()


def signed_post(host_lines: str, version: str = "HTTP/1.1") -> bytes:
    body = b'{"id": "x"}'
    return (
        f"POST {PATH} {version}\r\n{host_lines}X-Crystallize-Signature: {sign_hmac(SECRET, body)}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_blank_lines_on_an_idle_keep_alive_connection_do_not_hold_it_open() -> None:
    """Empty lines before a request line are skipped by the parser, but they are data:
    they end uvicorn's keep-alive wait, so the head deadline must take over."""
    timeout = LIMITS["header_timeout_seconds"]
    with live_server({"http": LIMITS}) as server, server.connect() as sock:
        sock.sendall(signed_post("Host: x\r\n"))
        assert status_of(read_response(sock)) == 202
        started = time.monotonic()
        try:
            for _ in range(3):
                sock.sendall(b"\r\n")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_server(sock, within=timeout + 1.0)
        assert time.monotonic() - started < timeout + 1.5


def test_http_1_1_without_exactly_one_host_is_400() -> None:
    with live_server({"http": LIMITS}) as server:
        for host_lines in ("", "Host: a\r\nHost: b\r\n"):
            with server.connect() as sock:
                sock.sendall(signed_post(host_lines))
                response = read_response(sock)
            assert status_of(response) == 400, response
            assert b"application/problem+json" in response
            assert b"urn:webhook-gateway:problem:invalid-host" in response
        assert server.metric("webhookgw_ingress_http_refused_total", reason="malformed") == 2
        assert (
            server.wait_metric(2, "webhookgw_ingress_requests_total", source="", status="400") == 2
        )
        assert server.producer.records == []


def test_http_1_0_may_omit_host_but_not_repeat_it() -> None:
    with live_server({"http": LIMITS}) as server:
        with server.connect() as sock:
            sock.sendall(signed_post("", "HTTP/1.0"))
            assert status_of(read_response(sock)) == 202
        with server.connect() as sock:
            sock.sendall(signed_post("Host: a\r\nHost: a\r\n", "HTTP/1.0"))
            assert status_of(read_response(sock)) == 400
        assert len(server.producer.records) == 1


def _limits_after(soft: int, hard: int, max_connections: int) -> tuple[str, str]:
    """In a child process started with RLIMIT_NOFILE (soft, hard): the limits after
    ensure_open_files, and its warning."""
    import resource
    import subprocess
    import sys

    code = (
        "import resource; from gateway.httplimits import ensure_open_files; "
        f"w = ensure_open_files({max_connections}); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)); print(w)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )
    limits, warning = done.stdout.splitlines()
    return limits, warning


def test_the_open_files_limit_is_raised_to_what_max_connections_needs() -> None:
    # The common container default (soft 1024) would refuse connections far below 4096.
    limits, warning = _limits_after(1024, 8192, 4096)
    assert limits == "(4352, 8192)"
    assert warning == "None"
    # A hard limit below the need: raised as far as it goes, and said why.
    limits, warning = _limits_after(512, 1024, 4096)
    assert limits == "(1024, 1024)"
    assert "gateway.http.max_connections: 4096 needs 4352 open files" in warning
    assert "hard limit is 1024" in warning
