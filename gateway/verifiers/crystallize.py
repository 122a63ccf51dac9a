"""Crystallize webhook signatures (header ``X-Crystallize-Signature``).

Crystallize sends an HS256 JWT signed with the tenant's signature secret. Its ``hmac``
claim is the plain (unkeyed) SHA-256 hex of JavaScript's
``JSON.stringify({url, method, body})`` for the request it made, so the token binds the
URL, the method and the body; :mod:`gateway.verifiers.jsjson` reproduces the serialisation.

GET webhooks carry their data in the query string. When the first challenge fails for a
GET, Crystallize's official verifier retries with ``url`` = the webhook URL as configured
in Crystallize and ``body`` = the query parameters that URL does not contain; we do the
same when ``webhook_url`` is configured, but only where that challenge pins down what
the gateway reads from the request, since nothing else of it is signed then:

* an empty body (the challenge does not cover a body, so none may ride along);
* the request's path is the configured URL's (else an event-type segment, or another
  source's path, would go unsigned);
* the configured URL's own parameters are all there with their configured values (they
  are left out of the challenge body);
* no parameter name is repeated: the challenge folds the query last-wins, the gateway
  reads key and event type first-wins, so ``?id=X&id=P1`` would verify as ``id=P1``
  and be recorded as ``id=X``. Such a request is refused as ``malformed``.

``hmac`` mode is the older scheme the seed document describes: the header is the hex
HMAC-SHA256 of the raw body with the secret. ``auto`` picks the mode by the header's
shape. Every comparison of secret-derived values is constant-time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, urlsplit

import jwt
from pydantic import BaseModel, Field, SecretStr, field_validator

from gateway.verifiers import Outgoing, VerificationError, Verified, WebhookRequest, jws
from gateway.verifiers.jsjson import JsonValue, NotJsonError, stringify, stringify_request
from webhook_common.config import StrictModel
from webhook_common.errors import ConfigError

HEADER: Final = "x-crystallize-signature"
_REQUIRED_CLAIMS: Final = ["exp", "iss", "aud", "hmac"]
_JWT_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_HEX_SHA256: Final = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN_DETAILS: Final = {
    "malformed": "X-Crystallize-Signature is not a valid HS256 JWT",
    "expired": "signature token expired (exp plus leeway is past)",
    "future": "signature token is issued in the future (beyond leeway)",
    "claims": "signature token has a missing or wrong iss, aud, iat or hmac",
}


class CrystallizeConfig(StrictModel):
    """The ``verifier`` section of a Crystallize source."""

    mode: Literal["auto", "jwt", "hmac"] = "auto"
    # Crystallize tokens expire one second after they are issued, so without leeway any
    # clock skew or delivery delay rejects genuine webhooks. 30 s covers NTP-level skew
    # plus slow TLS/network/queueing on either side. What it opens is a replay window
    # for the identical request only (the token binds url, method and body), and the
    # consumers drop such duplicates by event id.
    leeway_seconds: float = Field(default=30.0, ge=0, le=600)
    tenant_identifier: str | None = Field(default=None, min_length=1)
    webhook_url: str | None = None
    issuer: str = "crystallize"
    audience: str = "webhook"

    @field_validator("webhook_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        # Kept verbatim (no normalisation): it is hashed exactly as Crystallize has it.
        if value is not None:
            try:
                parts = urlsplit(value)
            except ValueError as exc:
                raise ValueError(f"not a URL: {exc}") from None
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be the absolute http(s) URL configured in Crystallize")
            if _repeats_a_name(parse_qsl(parts.query, keep_blank_values=True)):
                # Every GET delivery would repeat it too, and those are refused.
                raise ValueError("must not repeat a query parameter name")
        return value


def _hs256_key(secret: str) -> bytes:
    """The secret as an HS256 key that PyJWT accepts without a per-call warning.

    HMAC zero-pads keys shorter than the hash block size (RFC 2104 §2), so padding a
    short secret to 32 bytes yields the very same MAC. The tenant cannot choose
    Crystallize's secret length, so PyJWT's short-key warning would only be noise.
    """
    key = secret.encode("utf-8")
    return key.ljust(32, b"\0") if len(key) < 32 else key


def _repeats_a_name(params: Sequence[tuple[str, str]]) -> bool:
    return len({name for name, _ in params}) != len(params)


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def challenge_hash(url: str, method: str, body: bytes) -> str:
    """The ``hmac`` claim Crystallize computes for a request (raises ``NotJsonError``)."""
    return _sha256_hex(stringify_request(url, method, body))


def sign_jwt(
    secret: str,
    url: str,
    method: str,
    body: bytes,
    *,
    tenant_id: str = "000000000000000000000000",
    tenant_identifier: str = "example-tenant",
    user_id: str | None = None,
    ttl: int = 1,
    now: int | None = None,
    issuer: str = "crystallize",
    audience: str = "webhook",
) -> str:
    """Sign a request the way Crystallize does (tests, ``gateway send``).

    ``ttl`` defaults to Crystallize's one second. Raises ``NotJsonError`` for a
    non-empty body that is not JSON (Crystallize cannot sign one).
    """
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "aud": audience,
        "sub": "signature",
        "iss": issuer,
        "iat": issued,
        "exp": issued + ttl,
        "tenantId": tenant_id,
        "tenantIdentifier": tenant_identifier,
        "hmac": challenge_hash(url, method, body),
    }
    if user_id is not None:
        claims["userId"] = user_id
    return jwt.encode(claims, _hs256_key(secret), algorithm="HS256")


def sign_hmac(secret: str, body: bytes) -> str:
    """The ``hmac`` mode header: lowercase hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class CrystallizeVerifier:
    """Verifies ``X-Crystallize-Signature`` as a JWT (Crystallize) or a body HMAC."""

    Config: ClassVar[type[BaseModel]] = CrystallizeConfig

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        if not isinstance(config, CrystallizeConfig):
            raise ConfigError(
                f"crystallize verifier: expected a CrystallizeConfig, got {type(config).__name__}"
            )
        if not secrets:
            raise ConfigError("crystallize verifier: secrets: expected at least one secret")
        for index, secret in enumerate(secrets):
            if not secret.get_secret_value():
                # An empty secret (e.g. an unset ${VAR}) would let anyone sign.
                raise ConfigError(f"crystallize verifier: secrets[{index}]: must not be empty")
        self._config = config
        raw = [s.get_secret_value() for s in secrets]
        self._jwt_keys = [_hs256_key(s) for s in raw]
        self._hmac_keys = [s.encode("utf-8") for s in raw]
        self._webhook_path = ""
        self._configured_params: dict[str, str] = {}
        if config.webhook_url is not None:
            parts = urlsplit(config.webhook_url)
            self._webhook_path = parts.path
            self._configured_params = dict(parse_qsl(parts.query, keep_blank_values=True))

    signing_schemes: ClassVar[tuple[str, ...]] = ("jwt", "hmac")
    event_type_header = None

    def sign(self, request: Outgoing) -> dict[str, str]:
        config = self._config
        scheme = request.scheme or ("jwt" if config.mode == "auto" else config.mode)
        if config.mode != "auto" and scheme != config.mode:
            raise ConfigError(
                f"scheme {scheme}: this source's verifier accepts only {config.mode} "
                "signatures (verifier.mode)"
            )
        if scheme == "hmac":
            return {HEADER: sign_hmac(request.secret, request.body)}
        token = sign_jwt(
            request.secret,
            request.url,
            request.method,
            request.body,
            tenant_identifier=config.tenant_identifier or "example-tenant",
            issuer=config.issuer,
            audience=config.audience,
        )
        return {HEADER: token}

    def verify(self, request: WebhookRequest) -> Verified:
        header = request.headers.get(HEADER, "").strip()
        if not header:
            raise VerificationError("missing", "no X-Crystallize-Signature header")
        if not header.isascii():
            raise VerificationError("malformed", "X-Crystallize-Signature is not ASCII")
        mode = self._config.mode
        if mode == "auto":
            if _JWT_SHAPE.fullmatch(header):
                mode = "jwt"
            elif _HEX_SHA256.fullmatch(header):
                mode = "hmac"
            else:
                raise VerificationError(
                    "malformed", "X-Crystallize-Signature is neither a JWT nor a hex HMAC"
                )
        if mode == "jwt":
            return self._verify_jwt(header, request)
        return self._verify_hmac(header, request.body)

    def _verify_hmac(self, header: str, body: bytes) -> Verified:
        if not _HEX_SHA256.fullmatch(header):
            raise VerificationError(
                "malformed", "X-Crystallize-Signature is not 64 hex digits (HMAC-SHA256)"
            )
        given = header.lower()
        for index, key in enumerate(self._hmac_keys):
            # hmac.digest is OpenSSL's one-shot HMAC: no Python HMAC object per request.
            expected = hmac.digest(key, body, "sha256").hex()
            if hmac.compare_digest(expected, given):
                return Verified(secret_index=index)
        raise VerificationError("mismatch", "no configured secret produced this body HMAC")

    def _decode(self, token: str) -> tuple[dict[str, Any], int]:
        """Claims of a token whose signature one secret verifies, and that secret's index."""
        config = self._config
        try:
            parsed = jws.Token.parse(token)
            for index, key in enumerate(self._jwt_keys):
                if parsed.signed_with(key):  # else rotation: another secret may have
                    claims = jws.verified_claims(
                        parsed,
                        required=_REQUIRED_CLAIMS,
                        issuer=config.issuer,
                        audience=config.audience,
                        leeway=config.leeway_seconds,
                    )
                    return claims, index
        except jws.TokenError as exc:
            raise VerificationError(exc.reason, _TOKEN_DETAILS[exc.reason]) from None
        except (ValueError, TypeError, RecursionError):
            # Anything odd a hostile token could provoke: fail closed as a 401.
            raise VerificationError("malformed", _TOKEN_DETAILS["malformed"]) from None
        raise VerificationError("mismatch", "no configured secret produced the token signature")

    def _verify_jwt(self, token: str, request: WebhookRequest) -> Verified:
        claims, index = self._decode(token)
        signed_hash = claims.get("hmac")
        if not isinstance(signed_hash, str) or not _HEX_SHA256.fullmatch(signed_hash):
            raise VerificationError("claims", "the token's hmac claim is not a SHA-256 hex digest")
        expected_tenant = self._config.tenant_identifier
        if expected_tenant is not None and claims.get("tenantIdentifier") != expected_tenant:
            raise VerificationError(
                "claims", "the token's tenantIdentifier is not the configured one"
            )
        for challenge in self._challenges(request):
            if hmac.compare_digest(hashlib.sha256(challenge).hexdigest(), signed_hash):
                return Verified(secret_index=index)
        raise VerificationError(
            "mismatch", "the token's hmac claim does not match the request url, method and body"
        )

    def _challenges(self, request: WebhookRequest) -> Iterator[bytes]:
        """The serialised challenges the request may have been signed with, in order
        (lazily: each is only built when the ones before it failed)."""
        body = request.body
        if body:
            # Crystallize sends the body JSON.stringify made, so re-serialising it mostly
            # gives the same bytes: try the raw body in the frame first and skip parsing.
            # Sound because the hash binds the whole text: JSON strings are
            # self-delimiting, so a match means url and method are ours and the raw body
            # is exactly the text the signer's JSON.stringify produced for its body.
            yield b"".join(
                (
                    b'{"url":',
                    stringify(request.url).encode("utf-8"),
                    b',"method":',
                    stringify(request.method).encode("utf-8"),
                    b',"body":',
                    body,
                    b"}",
                )
            )
        with contextlib.suppress(NotJsonError):  # JSON.parse would throw: cannot match
            yield stringify_request(request.url, request.method, body).encode("utf-8")
        fallback = self._get_challenge(request)
        if fallback is not None:
            yield fallback.encode("utf-8")

    def _get_challenge(self, request: WebhookRequest) -> str | None:
        """The GET fallback challenge, when it applies (see the module docstring)."""
        webhook_url = self._config.webhook_url
        if webhook_url is None or request.method.upper() != "GET" or request.body:
            return None
        try:
            parts = urlsplit(request.url)
        except ValueError:
            return None
        # The raw path of the public URL: the one the request was routed by.
        if parts.path != self._webhook_path:
            return None
        # Decoded names, as the gateway reads them: `%69d` is `id` to both.
        params = parse_qsl(parts.query, keep_blank_values=True)
        if _repeats_a_name(params):
            raise VerificationError(
                "malformed",
                "the query string repeats a parameter name, which the GET signature "
                "cannot tell apart",
            )
        configured = self._configured_params
        body: dict[str, JsonValue] = {}
        for name, value in params:
            if name not in configured:
                body[name] = value
            elif value != configured[name]:
                return None
        if not body or len(params) - len(body) != len(configured):
            return None  # nothing signed, or a configured parameter left out
        return stringify({"url": webhook_url, "method": request.method, "body": body})
