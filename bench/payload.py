"""The requests the benchmarks send: the seed order from the Crystallize docs, signed.

Every request carries the same order with a different order id, so records spread over
the topic's partitions (the id is the Kafka key) and each has its own event id (the
gateway derives it from the body), as real traffic would. Signatures are computed once,
up front, with the Crystallize verifier's own signing helpers, so the load generator
only replays bytes.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

ORDER_FILE: Final = Path(__file__).with_name("order.json")
WEBHOOK_PATH: Final = "/webhooks/crystallize"
# The gateway hashes the URL the provider called into the JWT challenge; fixing it with
# the source's `public_url` keeps pre-signed tokens valid whatever port the run picks.
PUBLIC_URL: Final = "https://hooks.bench.invalid" + WEBHOOK_PATH
SECRET: Final = "bench-signature-secret-0123456789abcdef"  # noqa: S105 - a test fixture
# Long enough for the whole run; the verifier checks exp (plus leeway), not the lifetime.
JWT_TTL_SECONDS: Final = 6 * 3600

Mode = Literal["hmac", "jwt"]


@dataclass(frozen=True, slots=True)
class SignedRequest:
    order_id: str
    body: bytes
    signature: str


def seed_order() -> dict[str, Any]:
    """The order object from the seed document (one JSON object, as Crystallize sends)."""
    data: dict[str, Any] = orjson.loads(ORDER_FILE.read_bytes())
    return data


def order_id(index: int, salt: str = "") -> str:
    """A 24-hex-digit id shaped like Crystallize's (a MongoDB ObjectId)."""
    return hashlib.sha256(f"{salt}:{index}".encode()).hexdigest()[:24]


def order_body(index: int, salt: str = "") -> tuple[str, bytes]:
    """The seed order with its id replaced, serialised compactly (as ``JSON.stringify``)."""
    order = copy.deepcopy(seed_order())
    oid = order_id(index, salt)
    order["order"]["get"]["id"] = oid
    return oid, orjson.dumps(order)


def sign(mode: Mode, body: bytes) -> str:
    """The ``X-Crystallize-Signature`` value for ``body`` in the given mode."""
    from gateway.verifiers.crystallize import sign_hmac, sign_jwt

    if mode == "hmac":
        return sign_hmac(SECRET, body)
    return sign_jwt(SECRET, PUBLIC_URL, "POST", body, ttl=JWT_TTL_SECONDS)


def signed_requests(mode: Mode, count: int, salt: str = "") -> list[SignedRequest]:
    out = []
    for index in range(count):
        oid, body = order_body(index, salt)
        out.append(SignedRequest(oid, body, sign(mode, body)))
    return out


def write_wrk_requests(path: Path, requests: list[SignedRequest]) -> Path:
    """The file ``bench/post.lua`` reads: a signature line, then a body line, per request."""
    lines = []
    for request in requests:
        if b"\n" in request.body:
            raise ValueError("wrk request bodies must be one line (compact JSON)")
        lines.append(request.signature.encode() + b"\n" + request.body + b"\n")
    path.write_bytes(b"".join(lines))
    return path
