"""Standard Webhooks (https://www.standardwebhooks.com/), the scheme Svix and others send.

Headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (or the same with
the ``svix-`` prefix); the signature header is a space-separated list of
``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``, keyed with the bytes of a
``whsec_<base64>`` secret. Several entries let a sender sign with old and new secrets
during its own rotation; ``v1a`` (asymmetric) entries are skipped.

The ``standardwebhooks`` package is used in the tests as an independent oracle, not here:
its ``verify`` hard-codes the 5 minute tolerance against the wall clock (no configurable
window, no injectable clock), reports expired/future/mismatch only as message text,
decodes the body as UTF-8 (a non-UTF-8 body raises ``UnicodeDecodeError``), floors a
fractional timestamp before signing (so the signed content is not the header text),
reads only ``webhook-*`` names and lets ``ValueError``/``binascii.Error`` escape on a
malformed signature list. Wrapping it would mean re-parsing every header first, which
is all of the work this module does.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
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
    wire_bytes,
)
from webhook_common.errors import ConfigError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret
# Svix's own header names; Standard Webhooks renamed the prefix, senders use either.
HEADER_PREFIXES = ("webhook", "svix")


class StandardWebhooksConfig(TimestampedConfig):
    """``verifier: {type: standard-webhooks, tolerance_seconds: 300}``."""


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret (the prefix is optional, as in the
    reference libraries). Raises ``ValueError`` when it is not base64 or empty."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    # Secrets are shown unpadded by some senders; restore the padding before a strict decode.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if not key:
        raise ValueError("empty")
    return key


def _header_family(request: WebhookRequest) -> str:
    for prefix in HEADER_PREFIXES:
        if f"{prefix}-signature" in request.headers:
            return prefix
    raise fail("missing", "webhook-signature header is missing (nor svix-signature)")


def _signatures(header: str, what: str) -> list[bytes]:
    signatures = []
    for entry in header.split(" "):
        if not entry:  # doubled spaces are harmless
            continue
        version, comma, value = entry.partition(",")
        if not comma:
            raise fail("malformed", f"{what}: an entry is not of the form v1,<base64>")
        if version == "v1":
            signatures.append(
                decode_digest(value, encoding="base64", algorithm="sha256", what=what)
            )
    if not signatures:
        raise fail("malformed", f"{what} has no v1 signature")
    return signatures


class StandardWebhooksVerifier:
    """Verifies Standard Webhooks / Svix signatures with a replay window."""

    Config: ClassVar[type[BaseModel]] = StandardWebhooksConfig

    def __init__(
        self,
        config: BaseModel,
        secrets: Sequence[SecretStr],
        *,
        clock: Clock = time.time,
    ) -> None:
        if not secrets:
            raise ConfigError("secrets: got none: standard-webhooks needs at least one secret")
        keys = []
        for index, secret in enumerate(secrets):
            try:
                keys.append(decode_secret(secret.get_secret_value()))
            except ValueError as exc:
                raise ConfigError(
                    f"secrets[{index}]: {exc}: expected 'whsec_' followed by base64"
                ) from None
        self._keys = keys
        self._tolerance = own_config(config, StandardWebhooksConfig).tolerance_seconds
        self._clock = clock

    signing_schemes: ClassVar[tuple[str, ...]] = ()
    event_type_header = None

    def sign(self, request: Outgoing) -> dict[str, str]:
        return sign(request.body, request.secret, msg_id=f"msg_{uuid.uuid4().hex}")

    def verify(self, request: WebhookRequest) -> Verified:
        prefix = _header_family(request)
        sig_name, id_name, ts_name = (f"{prefix}-{n}" for n in ("signature", "id", "timestamp"))
        msg_id = required_header(request.headers, id_name)
        raw_ts = required_header(request.headers, ts_name)
        signatures = _signatures(request.headers[sig_name], sig_name)
        timestamp = parse_unix_seconds(raw_ts, ts_name)
        if "." in msg_id:
            # The spec forbids it: a '.' in the id makes `id.timestamp.body` ambiguous.
            raise fail("malformed", f"{id_name} contains '.'")
        message = wire_bytes(msg_id, id_name) + b"." + raw_ts.encode() + b"." + request.body
        index = match_secret(self._keys, message, signatures, what=sig_name)
        # Checked after the signature, so `expired`/`future` mean "authentic but outside the
        # window" (a replay or a skewed clock) and a forgery is always `mismatch`.
        check_window(timestamp, now=self._clock(), tolerance=self._tolerance, what=ts_name)
        (event_type,) = json_fields(request.body, "type")
        # webhook-id is part of the signed content ("{id}.{timestamp}.{body}").
        return Verified(
            secret_index=index, event_id=msg_id, event_type=event_type, event_id_signed=True
        )


def sign(
    body: bytes,
    secrets: str | Sequence[str],
    *,
    msg_id: str,
    timestamp: int | None = None,
    header_prefix: str = "webhook",
) -> dict[str, str]:
    """Headers a Standard Webhooks sender would send for ``body`` (one ``v1`` entry per
    secret, in order). ``timestamp`` defaults to now."""
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    message = msg_id.encode() + b"." + ts.encode() + b"." + body
    entries = [
        "v1," + base64.b64encode(hmac_digest(decode_secret(s), message)).decode()
        for s in secret_list
    ]
    return {
        f"{header_prefix}-id": msg_id,
        f"{header_prefix}-timestamp": ts,
        f"{header_prefix}-signature": " ".join(entries),
    }
