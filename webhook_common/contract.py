"""The Kafka record: the one contract between ingress and consumers.

The gateway writes, the consumers read, and nothing else couples them. One record per
accepted webhook:

* **key** — the entity id (UTF-8), e.g. the Crystallize order id, so that every event
  about one entity lands on one partition, in order.
* **value** — the request body, byte for byte as received and verified. Never
  re-serialised: consumers and auditors can re-check a signature against it.
* **headers** — CloudEvents 1.0 Kafka protocol binding, binary content mode
  (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md):

  ==================  ==========================================================
  ``ce_specversion``  ``1.0``
  ``ce_id``           event id: the provider's delivery id, else a SHA-256 over
                      source, method, query and raw body (so a resent delivery
                      has the same id and is deduplicated downstream)
  ``ce_source``       the configured source name, e.g. ``crystallize``
  ``ce_type``         the event type, e.g. ``order.created`` or ``order``
  ``ce_time``         when the gateway received it, RFC 3339 UTC with microseconds
  ``ce_subject``      the entity id (the same as the record key)
  ``content-type``    the request's Content-Type (``application/json`` when absent)
  ``ce_httpmethod``   the HTTP method the provider used (extension attribute)
  ``ce_httpquery``    the raw query string, possibly empty (extension attribute)
  ``ce_idorigin``     where ``ce_id`` comes from (extension attribute):
                      ``provider`` the provider's id, covered by its signature;
                      ``digest`` a SHA-256 of the signed content standing in for an
                      id the signature does not cover (a replay with a fresh id
                      is still a duplicate); ``derived`` a SHA-256 where the
                      provider sends no id at all (identical bodies may be
                      distinct events, so consumers keep these marks briefly).
                      Absent in older records: treat as ``provider``.
  ``ce_providerid``   the provider's own delivery id when ``ce_id`` is not it
  ``ce_traceparent``  W3C ``traceparent`` of the gateway's span for the request,
                      else the request's own valid ``traceparent``; absent when
                      neither (CloudEvents distributed tracing extension)
  ``ce_tracestate``   W3C ``tracestate`` going with it; absent when empty
  ``http-header-*``   allow-listed provider request headers, lower-cased names
  ==================  ==========================================================

Header values are UTF-8. Readers must ignore headers they do not know, so new
headers can be added without a version bump; removing or renaming one is a breaking
change to this module and to ``docs/contract.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from webhook_common.errors import ContractError

SPECVERSION = "1.0"

H_SPECVERSION = "ce_specversion"
H_ID = "ce_id"
H_SOURCE = "ce_source"
H_TYPE = "ce_type"
H_TIME = "ce_time"
H_SUBJECT = "ce_subject"
H_CONTENT_TYPE = "content-type"
H_METHOD = "ce_httpmethod"
H_QUERY = "ce_httpquery"
H_ID_ORIGIN = "ce_idorigin"
H_PROVIDER_ID = "ce_providerid"
H_TRACEPARENT = "ce_traceparent"
H_TRACESTATE = "ce_tracestate"
HTTP_HEADER_PREFIX = "http-header-"

DEFAULT_CONTENT_TYPE = "application/json"

_REQUIRED = (H_SPECVERSION, H_ID, H_SOURCE, H_TYPE, H_TIME)


class IdOrigin(StrEnum):
    """The values of ``ce_idorigin`` (see the module docstring)."""

    PROVIDER = "provider"
    DIGEST = "digest"
    DERIVED = "derived"


@dataclass(frozen=True, slots=True)
class EventMeta:
    """Everything in a record besides key and value."""

    id: str
    source: str
    type: str
    time: str
    subject: str = ""
    content_type: str = DEFAULT_CONTENT_TYPE
    method: str = "POST"
    query: str = ""
    http_headers: Mapping[str, str] = field(default_factory=dict)
    id_origin: IdOrigin = IdOrigin.PROVIDER
    provider_id: str = ""
    traceparent: str = ""
    tracestate: str = ""

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers in the order the contract lists them."""
        headers = [
            (H_SPECVERSION, b"1.0"),
            (H_ID, self.id.encode()),
            (H_SOURCE, self.source.encode()),
            (H_TYPE, self.type.encode()),
            (H_TIME, self.time.encode()),
            (H_SUBJECT, self.subject.encode()),
            (H_CONTENT_TYPE, self.content_type.encode()),
            (H_METHOD, self.method.encode()),
            (H_QUERY, self.query.encode()),
            (H_ID_ORIGIN, self.id_origin.value.encode()),
        ]
        if self.provider_id:
            headers.append((H_PROVIDER_ID, self.provider_id.encode()))
        if self.traceparent:
            headers.append((H_TRACEPARENT, self.traceparent.encode()))
            if self.tracestate:
                headers.append((H_TRACESTATE, self.tracestate.encode()))
        for name, value in self.http_headers.items():
            headers.append((HTTP_HEADER_PREFIX + name.lower(), value.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]]) -> EventMeta:
        """Parse record headers; raise :class:`ContractError` naming what is wrong."""
        values, http_headers = read_headers(headers)
        return cls(
            id=values[H_ID],
            source=values[H_SOURCE],
            type=values[H_TYPE],
            time=values[H_TIME],
            subject=values.get(H_SUBJECT, ""),
            content_type=values.get(H_CONTENT_TYPE) or DEFAULT_CONTENT_TYPE,
            method=values.get(H_METHOD) or "POST",
            query=values.get(H_QUERY, ""),
            http_headers=http_headers,
            id_origin=parse_id_origin(values.get(H_ID_ORIGIN)),
            provider_id=values.get(H_PROVIDER_ID, ""),
            traceparent=values.get(H_TRACEPARENT, ""),
            tracestate=values.get(H_TRACESTATE, ""),
        )


def parse_id_origin(value: str | None) -> IdOrigin:
    """``ce_idorigin`` read leniently: absent (older records) or unknown (a newer
    gateway) counts as ``provider``, whose marks are kept longest."""
    try:
        return IdOrigin(value) if value else IdOrigin.PROVIDER
    except ValueError:
        return IdOrigin.PROVIDER


_PREFIX_LEN = len(HTTP_HEADER_PREFIX)


def read_headers(
    headers: Iterable[tuple[str, bytes | None]],
) -> tuple[dict[str, str], dict[str, str]]:
    """Decode and check record headers: (contract headers by name, forwarded provider
    headers by name without the prefix). Raise :class:`ContractError` naming what is
    wrong. The consumers read every record through this (once), so it is kept lean."""
    values: dict[str, str] = {}
    http_headers: dict[str, str] = {}
    for name, raw in headers:
        try:
            text = raw.decode() if raw else ""
        except UnicodeDecodeError as exc:
            raise ContractError(f"record header {name!r} is not valid UTF-8") from exc
        if name.startswith(HTTP_HEADER_PREFIX):
            http_headers[name[_PREFIX_LEN:]] = text
        else:
            values[name] = text
    if not all(map(values.get, _REQUIRED)):
        missing = [h for h in _REQUIRED if not values.get(h)]
        raise ContractError(f"record lacks required header(s) {', '.join(missing)}")
    if values[H_SPECVERSION] != SPECVERSION:
        raise ContractError(
            f"record header {H_SPECVERSION}={values[H_SPECVERSION]!r}: expected {SPECVERSION!r}"
        )
    return values, http_headers


_second_cache: tuple[int, str] = (-1, "")


def format_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``, from a Unix timestamp."""
    # This runs once per webhook. Webhooks arrive many per second, so the date-and-time
    # part is formatted once per second and only the microseconds per call. Rounding to
    # the nearest microsecond exactly as datetime.fromtimestamp does.
    global _second_cache
    fraction, whole = math.modf(ts)
    second, micro = int(whole), round(fraction * 1_000_000)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    cached_second, prefix = _second_cache
    if second != cached_second:
        # isoformat ends in "+00:00" for a UTC datetime; years 1000-9999 read the same.
        prefix = datetime.fromtimestamp(second, UTC).isoformat()[:-6]
        _second_cache = (second, prefix)
    return f"{prefix}.{micro:06d}Z"


def parse_time(value: str) -> datetime:
    """Parse a ``ce_time`` value (any RFC 3339 form) to an aware datetime."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(f"{H_TIME}={value!r} is not an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        raise ContractError(f"{H_TIME}={value!r} has no UTC offset")
    return parsed
