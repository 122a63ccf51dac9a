"""The OpenAPI document of the webhook port, and the FastAPI app that serves it.

The webhook paths are not FastAPI path operations (the hot path is a plain ASGI handler,
:mod:`gateway.app`), so their operations are described here by hand, one per source,
method and optional event-type segment, from the same :class:`~gateway.sources.Source`
objects the handler routes by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import extract
from gateway.sources import Source
from webhook_common import package_version, problem


def _problem_handlers(app: FastAPI, on_error: Callable[[int], None]) -> None:
    """Answer FastAPI's own errors (404, 405, ...) as problem details, counted."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        on_error(exc.status_code)
        return problem.from_http_exception(request, exc, missing="no webhook source")

    app.add_exception_handler(HTTPException, http_error)


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string", "example": "urn:webhook-gateway:problem:unauthorized"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail", "instance"],
}

_ERRORS = {
    "400": "Body is not JSON (`invalid-body`) or nests too deeply to parse "
    "(`body-too-deep`), on sources with `require_json`; the event-type path segment is not "
    "plain path characters (`invalid-path`); or a value the record would carry holds a "
    "control character, or as the event type is longer than "
    f"{extract.MAX_ID_LENGTH} characters (`invalid-header`, `invalid-query`, "
    "`invalid-event-type`, `invalid-event-id`); malformed HTTP (`malformed-request`, "
    "`invalid-host`). The `type` member says which; docs/contract.md lists every answer",
    "401": "Signature missing, invalid or expired",
    "405": "Method not allowed for this source (see the `Allow` header)",
    "408": "Body not received within the body timeout",
    "413": "Body over the source's limit",
    "429": "Over the source's rate limit (see `Retry-After`)",
    "503": "Kafka did not acknowledge in time (and the durable spool, when enabled, is "
    "full), or too many requests in progress (see `Retry-After`)",
}


def _operation(source: Source, method: str, with_segment: bool) -> dict[str, Any]:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    responses: dict[str, Any] = {
        "202": {
            "description": "Verified and acknowledged by Kafka (or, with the durable "
            "spool enabled, written to its journal)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"id": {"type": "string", "description": "event id"}},
                        "required": ["id"],
                    }
                }
            },
        }
    }
    for status, description in _ERRORS.items():
        if status == "429" and source.rate_limit is None:
            continue
        responses[status] = {
            "description": description,
            "content": {"application/problem+json": {"schema": problem_ref}},
        }
    op: dict[str, Any] = {
        "tags": ["webhooks"],
        "summary": f"Receive a {source.name} webhook",
        "description": (
            f"Verified with the `{type(source.verifier).__name__}` verifier on the raw "
            f"bytes, written to Kafka topic `{source.topic}`, then acknowledged. Body "
            f"limit {source.body_limit} bytes."
        ),
        "operationId": f"webhook_{source.name}_{method.lower()}"
        + ("_event_type" if with_segment else ""),
        "responses": responses,
    }
    if with_segment:
        op["parameters"] = [
            {
                "name": "event_type",
                "in": "path",
                "required": True,
                "schema": {
                    "type": "string",
                    "pattern": f"^{extract.EVENT_SEGMENT}$",
                    "maxLength": extract.MAX_ID_LENGTH,
                },
                "description": "event type recorded as `ce_type`; sent as is, not "
                "percent-encoded (a request with a percent-escape in it is a 400)",
            }
        ]
    if method != "GET":
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {}}},
        }
    return op


def create_api(
    sources: Sequence[Source], on_error: Callable[[int], None], *, docs: bool = True
) -> FastAPI:
    """The FastAPI app behind :class:`GatewayApp`: its problem answers for paths no
    source has, and with ``docs`` the OpenAPI document and its page."""
    api = FastAPI(
        title="webhook-gateway ingress",
        version=package_version(),
        description="Verifies webhooks on their raw bytes and writes them to Kafka.",
        redoc_url=None,
        docs_url="/docs" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    _problem_handlers(api, on_error)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=[]
            )
            paths = schema.setdefault("paths", {})
            for source in sources:
                for with_segment in (False, True):
                    path = source.path + ("/{event_type}" if with_segment else "")
                    paths[path] = {
                        m.lower(): _operation(source, m, with_segment) for m in source.methods
                    }
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                _PROBLEM_SCHEMA
            )
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def docs_routes(sources: Sequence[Source]) -> list[BaseRoute]:
    """``/openapi.json`` and ``/docs`` for the admin port."""
    api = create_api(sources, lambda status: None)

    async def document(request: Request) -> Response:
        return JSONResponse(api.openapi())

    async def page(request: Request) -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{api.title} - docs")

    return [
        Route("/openapi.json", document, methods=["GET"]),
        Route("/docs", page, methods=["GET"]),
    ]
