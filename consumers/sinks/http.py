"""The ``http`` sink: POST each event's raw body to a URL.

The request carries the body byte for byte, its original ``Content-Type``, the original
request headers named in ``forward_headers``, static ``headers`` (e.g. an
``Authorization`` token), CloudEvents HTTP binary-mode headers (``ce-id``,
``ce-source``, ``ce-type``, ``ce-time``, ``ce-subject``, and the W3C ``traceparent`` /
``tracestate`` of the delivery's span, else the record's) unless turned off, an
``Idempotency-Key`` naming the event, and, optionally, a fresh signature so the target
can verify it came from this gateway:

* ``hmac-sha256`` — hex (or base64) HMAC-SHA256 of the body under ``secret``, in a
  configurable header with a configurable prefix (``X-Signature-256: sha256=...``);
* ``standard-webhooks`` — ``webhook-id`` (the event id, so the target can deduplicate),
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64>`` per
  https://www.standardwebhooks.com/ with a ``whsec_`` secret.

Delivery is at-least-once and this sink cannot tell what the target already has: a
request the target processed but whose answer never reached the consumer (a timeout, a
consumer killed before writing its dedup mark) is sent again. Every request therefore
carries the event id, the same on every attempt and replay, for the target to
deduplicate on: always as ``Idempotency-Key`` (an RFC 8941 string, as in the IETF
draft "The Idempotency-Key HTTP Header Field"; left out for an id that is not
printable ASCII, which that syntax cannot carry), as ``ce-id`` (unless the CloudEvents
headers are turned off) and, when signing with Standard Webhooks, as ``webhook-id``.
After a crash, the repeats are at most the deliveries in flight at that instant: one per
delivery slot (``concurrency.max_parallel``).

Outcomes: 2xx is delivered. 408, 429, 5xx, timeouts and connection errors are
retriable; every other status (other 4xx, and 3xx: redirects are not followed) is not.
Errors name the sink, the URL without credentials or query, and the status; never a
secret, a header value or the response body (which may echo them).

Header values cannot hold control characters (CR and LF would end the header early: a
header injection): static ones (``headers``, ``content_type``, ``sign.prefix``) are
refused when the config is loaded, and a value taken from the event (a forwarded
header, the entity id in ``ce-subject``) that holds one fails the delivery permanently,
so it is dead-lettered at once. Spaces and tabs around a value are dropped, as HTTP
does.

``timeout_seconds`` bounds the whole request: waiting for a connection, connecting,
sending and reading the answer's head. The body of the answer is only drained, up to
``_DRAIN_BYTES``, within what is left of that time, so the connection can be reused; a
longer or slower one is not read further and its connection is closed. The status
alone decides the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import ClassVar, Literal

import httpx
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationInfo, field_validator

from consumers.event import Event
from consumers.sinks import SinkContext, SinkError
from webhook_common import tracing
from webhook_common.config import ConfigPath, StrictModel

# Set by the HTTP client from the request itself; forwarding them would corrupt it.
_NOT_FORWARDABLE = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    }
)
_RETRIABLE_STATUS = frozenset({408, 425, 429})
IDEMPOTENCY_HEADER = "idempotency-key"
# RFC 9110 field names: tokens.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Control characters a field value cannot hold (HTAB is allowed inside one).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What is read of an answer's body at most: enough for a typical short body, so its
# connection goes back to the pool; more is not read (it is never shown anyway).
_DRAIN_BYTES = 64 * 1024


def check_header_value(value: str) -> None:
    """Raises ValueError, without quoting ``value``, if a header cannot carry it."""
    if _CONTROL.search(value):
        raise ValueError("a value without control characters (CR, LF, NUL, ...)")


def check_header_name(name: str) -> None:
    if not _TOKEN.match(name):
        raise ValueError(f"a header name (letters, digits and !#$%&'*+.^_`|~-), got {name!r}")


def idempotency_key(event_id: str) -> str | None:
    """``event_id`` as an RFC 8941 string (quoted), or None when it cannot be one."""
    if not event_id.isascii() or not event_id.isprintable():
        return None
    return '"' + event_id.replace("\\", "\\\\").replace('"', '\\"') + '"'


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64)."""
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        # The message must not contain the secret: pydantic would print it.
        raise ValueError("expected 'whsec_' followed by base64") from None
    if len(key) < 16:
        raise ValueError("expected a key of at least 16 bytes (24 base64 characters)")
    return key


_HMAC_ONLY = frozenset({"header", "prefix", "encoding"})


class Signing(StrictModel):
    """``sign:`` — one flat model rather than a tagged union, so that a config error
    names the key as written (``sign.secret``), not the union member."""

    scheme: Literal["hmac-sha256", "standard-webhooks"]
    secret: SecretStr = Field(min_length=1)
    header: str = Field(default="X-Signature-256", pattern=r"^[A-Za-z0-9-]+$")
    prefix: str = "sha256="
    encoding: Literal["hex", "base64"] = "hex"

    @field_validator("prefix")
    @classmethod
    def _prefix_fits(cls, value: str) -> str:
        check_header_value(value)
        return value

    # Field validators, not a model validator: an error then sits at ``sign.secret``,
    # whose value is redacted, instead of at ``sign``, whose value would be printed.
    @field_validator("secret")
    @classmethod
    def _secret_fits(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("scheme") == "standard-webhooks":
            standard_webhooks_key(value.get_secret_value())
        return value

    @field_validator(*_HMAC_ONLY)
    @classmethod
    def _hmac_only(cls, value: str, info: ValidationInfo) -> str:
        # Runs only for keys actually written (defaults are not validated).
        if info.data.get("scheme") == "standard-webhooks":
            raise ValueError("applies to scheme hmac-sha256 only")
        return value

    def headers(self, msg_id: str, body: bytes, now: float) -> dict[str, str]:
        """The signature header(s) for one delivery of ``body``."""
        secret = self.secret.get_secret_value()
        if self.scheme == "hmac-sha256":
            digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
            text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
            return {self.header: self.prefix + text}
        # Standard Webhooks: sign "<id>.<timestamp>.<body>"; the id lets targets deduplicate.
        timestamp = str(int(now))
        signed = f"{msg_id}.{timestamp}.".encode() + body
        digest = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256).digest()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }


class HttpSinkConfig(StrictModel):
    # Out of repr: user info or a query string may hold credentials.
    url: AnyHttpUrl = Field(repr=False)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    forward_headers: list[str] = Field(
        default_factory=list, description="original request headers to copy, any case"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="static headers, e.g. Authorization (kept secret)"
    )
    content_type: str | None = Field(default=None, description="default: the event's own")
    cloudevents_headers: bool = True
    sign: Signing | None = None
    max_connections: int = Field(default=100, ge=1, le=10_000)
    ca_file: ConfigPath | None = None

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower() for v in value]
        for name in names:
            check_header_name(name)
        bad = sorted(set(names) & _NOT_FORWARDABLE)
        if bad:
            raise ValueError(f"headers the client sets itself cannot be forwarded: {bad}")
        return names

    @field_validator("headers")
    @classmethod
    def _sendable(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # The error names the header, never its value (these are credentials).
        for name, secret in value.items():
            check_header_name(name)
            try:
                check_header_value(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"header {name!r}: {exc}") from None
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str | None) -> str | None:
        if value is not None:
            check_header_value(value)
        return value


def redacted_url(url: str) -> str:
    """``scheme://host[:port]/path``: no user info and no query, which may hold tokens."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


class HttpSink:
    """POSTs events to one URL through a pooled ``httpx.AsyncClient``."""

    Config: ClassVar[type[HttpSinkConfig]] = HttpSinkConfig

    def __init__(self, name: str, config: HttpSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self._url = str(config.url)
        self._where = f"http sink {name!r} ({redacted_url(self._url)})"
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise SinkError(f"{self._where} is closed", retriable=True)
        if self._client is not None:
            return
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
        )
        verify: bool | str = str(self.config.ca_file) if self.config.ca_file else True
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout_seconds),
            limits=limits,
            follow_redirects=False,
            verify=verify,
        )

    def request_headers(self, event: Event, now: float) -> dict[str, str]:
        """The headers of the request delivering ``event`` (signature included)."""
        headers: dict[str, str] = {}
        for name in self.config.forward_headers:
            value = event.headers.get(name)
            if value is not None:
                headers[name] = value
        for name, secret in self.config.headers.items():
            headers[name] = secret.get_secret_value()
        if self.config.cloudevents_headers:
            headers.update(
                {
                    "ce-specversion": "1.0",
                    "ce-id": event.id,
                    "ce-source": event.source,
                    "ce-type": event.type,
                    "ce-time": event.time,
                    "ce-subject": event.key,
                }
            )
            # W3C trace context (the CloudEvents distributed tracing extension in HTTP):
            # the delivery's span when tracing is on, else the record's own context.
            trace_context = tracing.current_trace_headers() or tracing.incoming(
                event.traceparent, event.tracestate
            )
            if trace_context[0]:
                headers[tracing.TRACEPARENT_HEADER] = trace_context[0]
                if trace_context[1]:
                    headers[tracing.TRACESTATE_HEADER] = trace_context[1]
        key = idempotency_key(event.id)
        if key is not None:
            # Ours wins over a forwarded or static one: it must name this event.
            for name in [n for n in headers if n.lower() == IDEMPOTENCY_HEADER]:
                del headers[name]
            headers[IDEMPOTENCY_HEADER] = key
        headers["content-type"] = self.config.content_type or event.content_type
        if self.config.sign is not None:
            headers.update(self.config.sign.headers(event.id, event.body, now))
        return headers

    def _encode(self, event: Event, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        """The headers as sent; a value from the event with a control character is a
        permanent failure (it would be one on every attempt)."""
        encoded = []
        for name, value in headers.items():
            value = value.strip(" \t")
            if _CONTROL.search(value):
                raise SinkError(
                    f"{self._where}: event {event.id!r}: header {name!r} holds a control "
                    "character (CR, LF, NUL, ...) and cannot be sent",
                    retriable=False,
                )
            # Values may be non-ASCII (a subject, a forwarded header): sent as UTF-8.
            encoded.append((name.encode("ascii"), value.encode("utf-8")))
        return encoded

    async def send(self, event: Event) -> None:
        client = self._client
        if client is None:
            state = "closed" if self._closed else "not started"
            raise SinkError(f"{self._where} is {state}", retriable=True)
        encoded = self._encode(event, self.request_headers(event, time.time()))
        request = client.build_request("POST", self._url, content=event.body, headers=encoded)
        # httpx's timeout bounds each read and write, not their sum: a target sending its
        # answer a byte at a time would hold the delivery forever.
        deadline = asyncio.get_running_loop().time() + self.config.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise SinkError(
                f"{self._where}: event {event.id!r}: no answer within "
                f"{self.config.timeout_seconds:g} s ({type(exc).__name__})",
                retriable=True,
            ) from None
        except httpx.TransportError as exc:
            raise SinkError(
                f"{self._where}: event {event.id!r}: connection failed ({type(exc).__name__})",
                retriable=True,
            ) from None
        try:
            async with asyncio.timeout_at(deadline):
                await _drain(response)
        except (httpx.HTTPError, TimeoutError):
            pass  # the status is in; the connection is closed rather than reused
        finally:
            await response.aclose()
        status = response.status_code
        if 200 <= status < 300:
            return
        retriable = status in _RETRIABLE_STATUS or status >= 500
        raise SinkError(
            f"{self._where}: event {event.id!r}: answered {status} {response.reason_phrase}"
            + ("" if retriable else " (not retried: the target refuses this request)"),
            retriable=retriable,
        )

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


async def _drain(response: httpx.Response) -> None:
    """Read and drop at most ``_DRAIN_BYTES`` of the body (undecoded: a compressed body
    is not expanded); a longer one is left unread, and closing the response then closes
    its connection."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > _DRAIN_BYTES:
            return
