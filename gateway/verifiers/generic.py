"""A configurable HMAC scheme for providers without a dedicated verifier.

One header carries ``<prefix><hex or base64 HMAC>`` (SHA-256 or SHA-512) of a signed
content built from a template over ``{body}`` and, when the provider sends one, a Unix
timestamp header (``{timestamp}``), which then gets the same replay window as the
dedicated timestamped schemes. Optional headers name the event id and type.

    verifier:
      type: generic-hmac
      header: X-Signature
      algorithm: sha256        # or sha512
      encoding: hex            # or base64
      prefix: "sha256="
      timestamp_header: X-Timestamp
      template: "{timestamp}.{body}"
"""

from __future__ import annotations

import base64
import re
import string
import time
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from gateway.verifiers import Outgoing, Verified, WebhookRequest
from gateway.verifiers._common import (
    Algorithm,
    Clock,
    Encoding,
    TimestampedConfig,
    check_window,
    decode_digest,
    fail,
    hmac_digest,
    match_secret,
    new_id,
    optional_header,
    own_config,
    parse_unix_seconds,
    required_header,
    utf8_secrets,
    wire_bytes,
)

# RFC 9110 token characters: what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELDS = frozenset({"body", "timestamp"})


def _template_fields(template: str) -> list[tuple[str, str | None]]:
    """``(literal, field)`` pairs of a ``{body}``/``{timestamp}`` template (``{{`` escapes)."""
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if field is not None and field not in _FIELDS:
            raise ValueError(f"unknown placeholder {{{field}}}: only {{body}} and {{timestamp}}")
        if spec or conversion:
            raise ValueError(f"{{{field}}} takes no format spec or conversion")
        pieces.append((literal, field))
    return pieces


class GenericHmacConfig(TimestampedConfig):
    """See the module docstring; header names are matched case-insensitively."""

    header: str = "x-signature"
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    # Default: "{timestamp}.{body}" with a timestamp header, else "{body}".
    template: str | None = None
    id_header: str | None = None
    type_header: str | None = None

    @field_validator("header", "timestamp_header", "id_header", "type_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise PydanticCustomError("header_name", "an HTTP header name")
        return None if value is None else value.lower()

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            fields = {field for _, field in _template_fields(value)}
        except ValueError as exc:  # unbalanced braces or an unknown placeholder
            raise PydanticCustomError(
                "template", "a valid template ({error})", {"error": str(exc)}
            ) from None
        if "body" not in fields:
            raise PydanticCustomError("template", "a template containing {body}")
        has_header = info.data.get("timestamp_header") is not None
        if has_header and "timestamp" not in fields:
            # Otherwise the timestamp is not signed and the window protects nothing.
            raise PydanticCustomError(
                "template", "a template containing {timestamp}, since timestamp_header is set"
            )
        if not has_header and "timestamp" in fields:
            raise PydanticCustomError("template", "no {timestamp} unless timestamp_header is set")
        return value

    def signed_template(self) -> str:
        if self.template is not None:
            return self.template
        return "{timestamp}.{body}" if self.timestamp_header else "{body}"


class GenericHmacVerifier:
    """Verifies a configurable single-header HMAC signature."""

    Config: ClassVar[type[BaseModel]] = GenericHmacConfig

    def __init__(
        self, config: BaseModel, secrets: Sequence[SecretStr], *, clock: Clock = time.time
    ) -> None:
        self._keys = utf8_secrets(secrets, "generic-hmac")
        self._config = cfg = own_config(config, GenericHmacConfig)
        self._pieces = [
            (literal.encode(), field) for literal, field in _template_fields(cfg.signed_template())
        ]
        self._clock = clock

    signing_schemes: ClassVar[tuple[str, ...]] = ()

    @property
    def event_type_header(self) -> str | None:
        return self._config.type_header

    def sign(self, request: Outgoing) -> dict[str, str]:
        cfg = self._config
        headers = sign(request.body, request.secret, cfg)
        if cfg.id_header is not None:
            headers[cfg.id_header] = new_id()
        if cfg.type_header is not None and request.event_type is not None:
            headers[cfg.type_header] = request.event_type
        return headers

    def verify(self, request: WebhookRequest) -> Verified:
        cfg = self._config
        header = required_header(request.headers, cfg.header)
        if not header.startswith(cfg.prefix):
            raise fail("malformed", f"{cfg.header} does not start with the configured prefix")
        signature = decode_digest(
            header[len(cfg.prefix) :],
            encoding=cfg.encoding,
            algorithm=cfg.algorithm,
            what=cfg.header,
        )
        timestamp: int | None = None
        raw_ts = b""
        if cfg.timestamp_header is not None:
            text = required_header(request.headers, cfg.timestamp_header)
            timestamp = parse_unix_seconds(text, cfg.timestamp_header)
            raw_ts = wire_bytes(text, cfg.timestamp_header)
        values = {"body": request.body, "timestamp": raw_ts}
        message = b"".join(
            literal + (values[field] if field else b"") for literal, field in self._pieces
        )
        index = match_secret(
            self._keys, message, [signature], algorithm=cfg.algorithm, what=cfg.header
        )
        if timestamp is not None and cfg.timestamp_header is not None:
            check_window(
                timestamp,
                now=self._clock(),
                tolerance=cfg.tolerance_seconds,
                what=cfg.timestamp_header,
            )
        return Verified(
            secret_index=index,
            event_id=optional_header(request.headers, cfg.id_header),
            event_type=optional_header(request.headers, cfg.type_header),
        )


def sign(
    body: bytes,
    secret: str,
    config: GenericHmacConfig,
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers a sender matching ``config`` would send for ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    values = {"body": body, "timestamp": ts.encode()}
    message = b"".join(
        literal.encode() + (values[field] if field else b"")
        for literal, field in _template_fields(config.signed_template())
    )
    digest = hmac_digest(secret.encode(), message, config.algorithm)
    encoded = digest.hex() if config.encoding == "hex" else base64.b64encode(digest).decode()
    headers = {config.header: config.prefix + encoded}
    if config.timestamp_header is not None:
        headers[config.timestamp_header] = ts
    return headers
