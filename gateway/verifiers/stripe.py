"""Stripe (https://docs.stripe.com/webhooks#verify-manually).

``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]``; each ``v1`` is
the hex HMAC-SHA256 of ``{t}.{body}`` keyed with the endpoint secret string as-is
(``whsec_...`` included: Stripe does not base64-decode it). Several ``v1`` appear while
Stripe rolls an endpoint secret; other schemes (``v0``, test mode) are ignored. Event id
and type are the body's ``id`` and ``type``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, SecretStr

from gateway.verifiers import Outgoing, Verified, WebhookRequest
from gateway.verifiers._common import (
    Clock,
    TimestampedConfig,
    check_window,
    decode_digest,
    fail,
    hmac_digest,
    json_fields,
    match_secret,
    own_config,
    parse_unix_seconds,
    required_header,
    utf8_secrets,
)

HEADER = "stripe-signature"


class StripeConfig(TimestampedConfig):
    """``verifier: {type: stripe, tolerance_seconds: 300}``."""


def _parse(header: str) -> tuple[str, list[bytes]]:
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq:
            raise fail("malformed", f"{HEADER}: an element is not of the form key=value")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(decode_digest(value, encoding="hex", algorithm="sha256", what=HEADER))
    if len(timestamps) != 1:
        raise fail("malformed", f"{HEADER} must have exactly one t= element")
    if not signatures:
        raise fail("malformed", f"{HEADER} has no v1= signature")
    return timestamps[0], signatures


class StripeVerifier:
    """Verifies ``Stripe-Signature`` with a replay window."""

    Config: ClassVar[type[BaseModel]] = StripeConfig

    def __init__(
        self, config: BaseModel, secrets: Sequence[SecretStr], *, clock: Clock = time.time
    ) -> None:
        self._keys = utf8_secrets(secrets, "stripe")
        self._tolerance = own_config(config, StripeConfig).tolerance_seconds
        self._clock = clock

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = None

    def sign(self, request: Outgoing) -> dict[str, str]:
        return sign(request.body, request.secret)

    def verify(self, request: WebhookRequest) -> Verified:
        raw_ts, signatures = _parse(required_header(request.headers, HEADER))
        timestamp = parse_unix_seconds(raw_ts, f"{HEADER} t=")
        message = raw_ts.encode() + b"." + request.body
        index = match_secret(self._keys, message, signatures, what=HEADER)
        # After the signature: `expired`/`future` then mean authentic-but-stale (see standard.py).
        check_window(timestamp, now=self._clock(), tolerance=self._tolerance, what=f"{HEADER} t=")
        event_id, event_type = json_fields(request.body, "id", "type")
        # The id is read from the signed body.
        return Verified(
            secret_index=index,
            event_id=event_id,
            event_type=event_type,
            event_id_signed=event_id is not None,
        )


def sign(
    body: bytes, secrets: str | Sequence[str], *, timestamp: int | None = None
) -> dict[str, str]:
    """The ``stripe-signature`` header Stripe would send (one ``v1`` per secret)."""
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    message = ts.encode() + b"." + body
    parts = [f"t={ts}"] + [f"v1={hmac_digest(s.encode(), message).hex()}" for s in secret_list]
    return {HEADER: ",".join(parts)}
