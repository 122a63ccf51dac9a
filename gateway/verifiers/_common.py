"""What the built-in HMAC verifiers share, so each scheme's module is only its parsing.

One piece of code does each security-relevant step for every scheme: reading a required
header, parsing and windowing a timestamp, decoding a signature, and comparing it in
constant time against every configured secret. A fix here fixes all schemes at once.

Everything raises :class:`~gateway.verifiers.VerificationError` with a fixed reason
label; details name the header, never echo its value (it is attacker-controlled and ends
up in logs) and never mention a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import orjson
from pydantic import BaseModel, Field, SecretStr

from gateway.verifiers import VerificationError, Verified, WebhookRequest
from webhook_common.config import StrictModel
from webhook_common.errors import ConfigError

C = TypeVar("C", bound=BaseModel)
Clock = Callable[[], float]
Algorithm = Literal["sha256", "sha512"]
Encoding = Literal["hex", "base64"]

DEFAULT_TOLERANCE_SECONDS = 300
# A header listing more signatures than this is not a rotation, it is an attempt to make
# us compare forever.
MAX_SIGNATURES = 16

# ASCII digits only (str.isdigit would take other scripts' digits too); 12 digits reach
# far past any real clock and keep int() away from huge inputs.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class TimestampedConfig(StrictModel):
    """Config of a scheme that signs a timestamp: how far from now it may be."""

    tolerance_seconds: int = Field(
        default=DEFAULT_TOLERANCE_SECONDS,
        ge=1,
        description="Reject a timestamp older or newer than this many seconds.",
    )


def own_config(config: BaseModel, model: type[C]) -> C:
    """Narrow the ``config`` the Protocol passes as any ``BaseModel`` to this verifier's own
    model (the registry always builds it from ``cls.Config``; anything else is a bug)."""
    if not isinstance(config, model):
        raise ConfigError(
            f"verifier config: got a {type(config).__name__}: expected {model.__name__}"
        )
    return config


def new_id() -> str:
    """A fresh delivery id, as a provider gives each delivery it signs."""
    return str(uuid.uuid4())


def fail(reason: str, detail: str) -> VerificationError:
    """Build the one exception type verifiers raise (``raise fail(...)`` reads well)."""
    return VerificationError(reason, detail)


def required_header(headers: Mapping[str, str], name: str) -> str:
    """The value of a header that must be there; absent or empty is ``missing``."""
    value = headers.get(name)
    if not value:
        raise fail("missing", f"{name} header is missing")
    return value


def optional_header(headers: Mapping[str, str], name: str | None) -> str | None:
    """The value of a header used for metadata only (event id/type); empty is None."""
    if name is None:
        return None
    return headers.get(name) or None


def wire_bytes(text: str, what: str) -> bytes:
    """The bytes a header value had on the wire.

    ASGI servers decode header bytes as latin-1, so encoding back with latin-1 recovers
    exactly what the provider signed, UTF-8 included. A character above U+00FF cannot
    have come from the wire that way; it can only be a caller's own string, taken as UTF-8.
    """
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise fail("malformed", f"{what} is not valid text") from None


def parse_unix_seconds(text: str, what: str) -> int:
    """An integer Unix timestamp in seconds, or ``malformed``."""
    if not _UNIX_SECONDS.fullmatch(text):
        raise fail("malformed", f"{what} is not an integer Unix timestamp in seconds")
    return int(text)


def check_window(timestamp: int, *, now: float, tolerance: int, what: str) -> None:
    """Reject a timestamp outside ``now ± tolerance``: ``expired`` (a replay or a very
    late retry) or ``future`` (a clock far ahead, or a forged time)."""
    if timestamp < now - tolerance:
        raise fail("expired", f"{what} is more than {tolerance} s in the past")
    if timestamp > now + tolerance:
        raise fail("future", f"{what} is more than {tolerance} s in the future")


def decode_digest(text: str, *, encoding: Encoding, algorithm: Algorithm, what: str) -> bytes:
    """Decode one signature and check it has the digest size of ``algorithm``.

    Strict on purpose: whitespace, a wrong alphabet or a wrong length are ``malformed``,
    which tells an operator "wrong scheme or wrong config" rather than "wrong secret".
    """
    raw: bytes | None = None
    if encoding == "hex":
        if _HEX.fullmatch(text):
            raw = bytes.fromhex(text)
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
            raw = None
    if raw is None:
        raise fail("malformed", f"{what} is not {encoding}")
    if len(raw) != hashlib.new(algorithm).digest_size:
        raise fail("malformed", f"{what} does not have the length of an HMAC-{algorithm}")
    return raw


def hmac_digest(key: bytes, message: bytes, algorithm: Algorithm = "sha256") -> bytes:
    return hmac.new(key, message, algorithm).digest()


def match_secret(
    keys: Sequence[bytes],
    message: bytes,
    signatures: Sequence[bytes],
    *,
    algorithm: Algorithm = "sha256",
    what: str,
) -> int:
    """Index of the first secret whose HMAC of ``message`` equals one of ``signatures``.

    Every secret is tried against every signature with :func:`hmac.compare_digest` and
    no early exit, so the time taken does not tell which secret (or whether any) matched.
    Raises ``mismatch`` when none does.
    """
    if not signatures:
        raise fail("malformed", f"{what} carries no signature")
    if len(signatures) > MAX_SIGNATURES:
        raise fail("malformed", f"{what} carries more than {MAX_SIGNATURES} signatures")
    found = -1
    for index, key in enumerate(keys):
        expected = hmac_digest(key, message, algorithm)
        for signature in signatures:
            if hmac.compare_digest(expected, signature) and found < 0:
                found = index
    if found < 0:
        raise fail("mismatch", f"{what} does not match any configured secret")
    return found


def utf8_secrets(secrets: Sequence[SecretStr], scheme: str) -> list[bytes]:
    """Secrets used as raw HMAC keys (their UTF-8 bytes), checked once at startup.

    An empty key is refused: an HMAC under the empty key is a signature anyone can make.
    """
    if not secrets:
        raise ConfigError(f"secrets: got none: the {scheme} verifier needs at least one secret")
    keys = []
    for index, secret in enumerate(secrets):
        value = secret.get_secret_value()
        if not value:
            raise ConfigError(f"secrets[{index}]: got an empty string: expected a secret")
        keys.append(value.encode("utf-8"))
    return keys


@dataclass(frozen=True, slots=True)
class BodySignature:
    """A scheme whose one header carries ``<prefix><HMAC of the body>`` and whose event id
    and type come from (unsigned) headers: GitHub and Shopify differ only in these fields.
    """

    header: str
    encoding: Encoding
    id_header: str
    type_header: str
    prefix: str = ""
    algorithm: Algorithm = "sha256"

    def verify(self, keys: Sequence[bytes], request: WebhookRequest) -> Verified:
        value = required_header(request.headers, self.header)
        if not value.startswith(self.prefix):
            raise fail("malformed", f"{self.header} does not start with {self.prefix!r}")
        signature = decode_digest(
            value.removeprefix(self.prefix),
            encoding=self.encoding,
            algorithm=self.algorithm,
            what=self.header,
        )
        index = match_secret(
            keys, request.body, [signature], algorithm=self.algorithm, what=self.header
        )
        return Verified(
            secret_index=index,
            event_id=optional_header(request.headers, self.id_header),
            event_type=optional_header(request.headers, self.type_header),
        )

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        """The headers the provider would send for ``body`` (id/type only when given)."""
        digest = hmac_digest(secret.encode(), body, self.algorithm)
        text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
        headers = {self.header: self.prefix + text}
        if event_id is not None:
            headers[self.id_header] = event_id
        if event_type is not None:
            headers[self.type_header] = event_type
        return headers


def json_fields(body: bytes, *names: str) -> tuple[str | None, ...]:
    """Top-level string fields of a JSON object body, None where absent or not a string.

    Only metadata for routing and dedup: a body that is not a JSON object is not an
    authentication failure, so this never raises.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return tuple(None for _ in names)
    if not isinstance(data, dict):
        return tuple(None for _ in names)
    out = []
    for name in names:
        value = data.get(name)
        out.append(value if isinstance(value, str) and value else None)
    return tuple(out)
