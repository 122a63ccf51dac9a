"""HS256 JSON Web Tokens: compact JWS (RFC 7515) and JWT claims (RFC 7519), verify only.

Crystallize signs every webhook with an HS256 JWT. PyJWT verified it at ~46 µs per
token on the benchmark machine (most of it a character-by-character alphabet check),
the largest single cost of a webhook. This module does the one thing needed: check
that one of our keys signed the token, then apply the claim rules. It accepts and
refuses what ``jwt.decode(token, key, algorithms=["HS256"], audience=..., issuer=...,
leeway=..., options={"require": [...]})`` does (``tests/gateway/verifiers/test_jws.py``
compares the two on generated tokens), except that it refuses header extensions the
gateway has no use for (``crit``, ``b64``) outright.

The algorithm is never taken from the token (RFC 8725 §2.1): the header must say
``HS256`` and the signature is an HMAC-SHA256 with our key, whatever else it says.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

# A segment: base64url without padding, or padded to a multiple of four with at most
# two "=" (some issuers pad; PyJWT accepts that too).
_SEGMENT: Final = r"[A-Za-z0-9_-]*(?:={1,2})?"
_TOKEN: Final = re.compile(rf"({_SEGMENT})\.({_SEGMENT})\.({_SEGMENT})")


class TokenError(Exception):
    """Why a token is refused. ``reason`` is the verifier's metric label:
    ``malformed``, ``mismatch``, ``expired``, ``future`` or ``claims``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _segment(text: str, name: str) -> bytes:
    stripped = text.rstrip("=")
    if (stripped != text and len(text) % 4) or len(stripped) % 4 == 1:
        raise TokenError("malformed", f"token {name} is not base64url")
    try:
        decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", f"token {name} is not base64url") from None
    # Only the canonical encoding: unused trailing bits must be zero, so one token has
    # one spelling (a resent token with flipped spare bits is not a different token).
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped.encode("ascii"):
        raise TokenError("malformed", f"token {name} is not canonical base64url")
    return decoded


def _object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TokenError("malformed", f"token {name} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("malformed", f"token {name} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class Token:
    """A well-formed HS256 token whose signature is not checked yet."""

    signing_input: bytes
    payload: bytes
    signature: bytes

    @classmethod
    def parse(cls, token: str) -> Token:
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise TokenError("malformed", "not a compact JWS (three base64url segments)")
        header_text, payload_text, signature_text = match.groups()
        header = _object(_segment(header_text, "header"), "header")
        if header.get("alg") != "HS256":
            raise TokenError("malformed", "token algorithm is not HS256")
        if "kid" in header and not isinstance(header["kid"], str):
            raise TokenError("malformed", "token kid is not a string")
        if "crit" in header or "b64" in header:
            raise TokenError("malformed", "token uses a header extension (crit, b64)")
        return cls(
            signing_input=f"{header_text}.{payload_text}".encode("ascii"),
            payload=_segment(payload_text, "payload"),
            signature=_segment(signature_text, "signature"),
        )

    def signed_with(self, key: bytes) -> bool:
        expected = hmac.digest(key, self.signing_input, "sha256")
        return hmac.compare_digest(expected, self.signature)


def _int_claim(claims: dict[str, Any], name: str, reason: str) -> int:
    # int() as PyJWT applies it: 1.9 -> 1, "12" -> 12, true -> 1; anything else refused.
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError):
        raise TokenError(reason, f"token claim {name} is not an integer") from None


def verified_claims(
    token: Token,
    *,
    required: Sequence[str],
    issuer: str,
    audience: str,
    leeway: float,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a token whose signature was checked, once they pass the rules;
    else :class:`TokenError`. The checks run in PyJWT's order, so a token with several
    faults is refused for the same first one."""
    claims = _object(token.payload, "payload")
    for name in required:
        if claims.get(name) is None:
            raise TokenError("claims", f"token lacks the {name} claim")
    now = time.time() if now is None else now
    if "iat" in claims and _int_claim(claims, "iat", "claims") > now + leeway:
        raise TokenError("future", "token issued in the future (iat)")
    if "nbf" in claims and _int_claim(claims, "nbf", "malformed") > now + leeway:
        raise TokenError("future", "token not valid yet (nbf)")
    if "exp" in claims and _int_claim(claims, "exp", "malformed") <= now - leeway:
        raise TokenError("expired", "token expired (exp)")
    if "iss" not in claims or not isinstance(claims["iss"], str) or claims["iss"] != issuer:
        raise TokenError("claims", "token iss is not the expected issuer")
    aud = claims.get("aud")
    if not aud:
        raise TokenError("claims", "token lacks the aud claim")
    audiences = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(audiences, list)
        or not all(isinstance(a, str) for a in audiences)
        or audience not in audiences
    ):
        raise TokenError("claims", "token aud is not the expected audience")
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenError("claims", f"token {name} is not a string")
    return claims
