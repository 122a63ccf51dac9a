"""Limits on the webhook port's connections that uvicorn itself lacks.

uvicorn (httptools) waits forever for a request head: a client that connects and
sends nothing, or drips its headers a byte at a time ("slowloris"), holds a
connection open indefinitely, and the size of a head is not bounded either. This
protocol adds, per connection:

* a deadline for the whole request head (``header_timeout_seconds``), answered 408;
  it also runs from any bytes on an idle keep-alive connection, because those end
  uvicorn's keep-alive wait even when the parser skips them (empty lines before a
  request line), which would leave no timer on the connection at all;
* a bound on the head's size (``max_header_bytes``), answered 431;
* a bound on open connections (``max_connections``): extra ones are closed at once,
  before anything is read;
* exactly one ``Host`` header (RFC 9112 §3.2; HTTP/1.0 may omit it), answered 400.

``max_connections`` only holds if the process may open that many descriptors: at start
the gateway raises its soft ``RLIMIT_NOFILE`` to what the bound needs (the common default
of 1024 would refuse connections with EMFILE long before 4096), within the hard limit,
and warns when the hard limit is lower (:func:`ensure_open_files`).

The answers are RFC 9457 problem details with ``Connection: close``; each refusal is
counted (``webhookgw_ingress_http_refused{reason}``). Body deadlines are the
handler's (:mod:`gateway.app`), because the body is read by the application.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import HttpLimits
from gateway.deadlines import Deadline, Deadlines
from webhook_common import problem

Refused = Callable[[str, int], None]  # (reason label, HTTP status or 0)


def _response(p: problem.Problem) -> bytes:
    body = p.body("")
    head = [
        f"HTTP/1.1 {p.status} {p.title}".encode(),
        b"content-type: " + problem.CONTENT_TYPE,
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _HeadRefused(Exception):
    """Raised from a parser callback once the head has been answered: httptools turns
    it into HttpParserCallbackError and stops parsing."""


def guarded_protocol(limits: HttpLimits, on_refused: Refused) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass enforcing ``limits`` (uvicorn's ``http=``)."""
    timeout = limits.header_timeout_seconds
    max_head = limits.max_header_bytes
    max_connections = limits.max_connections

    # Created on the first connection's loop; one timer for every connection's head.
    head_deadlines = Deadlines(timeout)

    class GuardedProtocol(HttpToolsProtocol):
        _head_timer: Deadline | None = None
        _head_bytes = 0
        _hosts = 0
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                on_refused("too_many_connections", 0)
                self._refused = True
                transport.abort()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = head_deadlines.add(self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _refuse(self, p: problem.Problem, reason: str) -> None:
            self._disarm()
            if self._refused or self.transport.is_closing():
                return
            self._refused = True
            on_refused(reason, p.status)
            self.transport.write(_response(p))
            self.transport.close()

        def _head_timed_out(self) -> None:
            self._head_timer = None
            self._refuse(
                problem.Problem(
                    408, "header-timeout", f"request head not received within {timeout:g} s"
                ),
                "header_timeout",
            )

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
                # No request in progress: these bytes start a head (or are blank lines the
                # parser skips), and uvicorn has just cancelled its keep-alive timer.
                self._arm()
            super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if self._refused:  # the head was answered already (431, 400); nothing more to say
                return
            on_refused("malformed", 400)
            self._refused = True
            self._disarm()
            p = problem.Problem(400, "malformed-request", "the request is not valid HTTP/1.1")
            self.transport.write(_response(p))
            self.transport.close()

        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > max_head:
                self._refuse(
                    problem.Problem(
                        431,
                        "header-too-large",
                        f"request head exceeds the limit of {max_head} bytes",
                    ),
                    "header_too_large",
                )
                raise _HeadRefused

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._hosts = 0
            self._arm()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            # The length test first: most headers are not four bytes long.
            if len(name) == 4 and name.lower() == b"host":
                self._hosts += 1
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            # RFC 9112 §3.2. The Host header is part of the URL a signature is checked
            # against, so a request naming no host, or two, is refused, not guessed at.
            hosts = self._hosts
            if hosts > 1 or (hosts == 0 and self.parser.get_http_version() != "1.0"):
                found = "more than one Host header" if hosts else "no Host header"
                detail = f"the request has {found}; HTTP/1.1 requires exactly one"
                self._refuse(problem.Problem(400, "invalid-host", detail), "malformed")
                raise _HeadRefused
            super().on_headers_complete()

    return GuardedProtocol


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """The uvicorn.Config settings that come straight from ``limits``."""
    return {"timeout_keep_alive": limits.keep_alive_seconds}


# Descriptors a gateway holds besides its client connections: Kafka connections, the
# listening and admin sockets, the spool's files, logs.
FD_MARGIN = 256


def ensure_open_files(max_connections: int) -> str | None:
    """Raise the soft open-files limit to ``max_connections`` + :data:`FD_MARGIN` (within
    the hard limit); a warning to log when the hard limit does not allow it."""
    need = max_connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target >= need:
        return None
    return (
        f"gateway.http.max_connections: {max_connections} needs {need} open files, but the "
        f"hard limit is {hard}: connections beyond about {max(target - FD_MARGIN, 0)} will "
        "fail; raise the limit (ulimit -Hn, the container runtime's nofile) or lower "
        "max_connections"
    )
