"""RFC 9457 problem details: every error answer of the gateway's HTTP API.

``type`` is a stable URN per kind of problem (documented in ``docs/contract.md``), so
clients branch on it rather than on ``title`` or ``detail`` wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import orjson
from starlette.types import Send

CONTENT_TYPE = b"application/problem+json"
_TYPE_PREFIX = "urn:webhook-gateway:problem:"


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    slug: str
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def type(self) -> str:
        return _TYPE_PREFIX + self.slug

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def body(self, instance: str) -> bytes:
        return orjson.dumps(
            {
                "type": self.type,
                "title": self.title,
                "status": self.status,
                "detail": self.detail,
                "instance": instance,
            }
        )


def bad_request(detail: str) -> Problem:
    return Problem(400, "invalid-body", detail)


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", detail)


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> Problem:
    return Problem(
        405,
        "method-not-allowed",
        f"method {method} is not allowed here; allowed: {', '.join(allowed)}",
        ((b"allow", ", ".join(allowed).encode()),),
    )


def too_large(limit: int, *, close: bool) -> Problem:
    """``close``: the rest of the body was not read, so the connection cannot be reused."""
    return Problem(
        413,
        "body-too-large",
        f"request body exceeds the limit of {limit} bytes",
        ((b"connection", b"close"),) if close else (),
    )


def too_many_requests(retry_after: int) -> Problem:
    return Problem(
        429,
        "rate-limited",
        "request rate over this source's limit; retry later",
        ((b"retry-after", str(retry_after).encode()),),
    )


def body_timeout(seconds: float) -> Problem:
    """The rest of the body never came; the connection cannot be reused."""
    return Problem(
        408,
        "body-timeout",
        f"request body not received within {seconds:g} s",
        ((b"connection", b"close"),),
    )


def unavailable(detail: str, retry_after: int) -> Problem:
    return Problem(503, "unavailable", detail, ((b"retry-after", str(retry_after).encode()),))


async def send_problem(send: Send, problem: Problem, instance: str) -> None:
    """Write ``problem`` as a complete ASGI response."""
    body = problem.body(instance)
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (b"content-type", CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
                *problem.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
