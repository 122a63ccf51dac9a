"""The ceiling: a raw ASGI app that reads the whole body and answers 202.

It does what every webhook receiver must do at least (receive the request, read the
body, answer) and nothing else, under the same uvicorn settings as the gateway, so the
gateway's throughput over this one is the share left after verification and Kafka.

Run: ``python -m uvicorn bench.apps.ceiling:app --no-access-log``
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

# The gateway answers {"id": "<64 hex>"}; the same size keeps the bytes on the wire equal.
_BODY = b'{"id":"' + b"0" * 64 + b'"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message: Any = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
