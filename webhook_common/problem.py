"""RFC 9457 problem details: every error answer of every HTTP port of the product.

The webhook port, both admin ports and the inspector answer errors through this module,
so there is one body shape and one ``type`` scheme: a stable URN per kind of problem
(``urn:webhook-gateway:problem:<slug>``, documented in ``docs/contract.md``). Clients
branch on ``type``, never on ``title`` or ``detail`` wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

CONTENT_TYPE = b"application/problem+json"
_TYPE_PREFIX = "urn:webhook-gateway:problem:"


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    slug: str
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # RFC 9457 extension members, after the standard ones (which they cannot replace).
    extensions: Mapping[str, Any] | None = None

    @property
    def type(self) -> str:
        return _TYPE_PREFIX + self.slug

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase

    def body(self, instance: str) -> bytes:
        members: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        for name, value in (self.extensions or {}).items():
            members.setdefault(name, value)
        return orjson.dumps(members)


_SLUGS = {404: "not-found", 405: "method-not-allowed"}


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


def response(problem: Problem, instance: str) -> Response:
    """``problem`` as a Starlette response (for endpoints of Starlette/FastAPI apps)."""
    return Response(
        problem.body(instance),
        status_code=problem.status,
        headers={k.decode(): v.decode() for k, v in problem.headers},
        media_type=CONTENT_TYPE.decode(),
    )


def from_http_exception(
    request: Request, exc: HTTPException, *, missing: str = "nothing"
) -> Response:
    """Starlette's own errors (no route, wrong method, ...) as problem details; a 404
    says ``{missing} at {path}``."""
    slug = _SLUGS.get(exc.status_code, "http-error")
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"{missing} at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed at {request.url.path}"
    p = Problem(exc.status_code, slug, str(detail), tuple(_encoded(exc.headers)))
    return response(p, request.url.path)


def _encoded(headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]


# A 500 that says nothing about the cause (it is logged, not answered).
INTERNAL_ERROR = Problem(500, "internal-error", "the server failed to answer")


def internal_error(instance: str) -> Response:
    return response(INTERNAL_ERROR, instance)
