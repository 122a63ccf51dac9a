"""What the gateway derives from a verified request: entity id, event type, event id.

Pure functions over values the request handler already has (the body parsed once,
the query parameters, the path), so they are cheap and easy to test.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from webhook_common.contract import IdOrigin
from webhook_common.jsonpointer import parse_pointer, resolve


def _as_id(value: Any) -> str | None:
    """A usable id: a non-empty string, or an integer (never a bool, float or object)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class KeyExtractor:
    """Entity id rules of one source, pointers parsed once at startup."""

    pointers: tuple[tuple[str, ...], ...]
    entity_get_id: bool = False
    query_param: str | None = None

    @classmethod
    def build(
        cls, pointers: Sequence[str], entity_get_id: bool, query_param: str | None
    ) -> KeyExtractor:
        return cls(tuple(parse_pointer(p) for p in pointers), entity_get_id, query_param)

    def entity_id(self, doc: Any, query: Mapping[str, str]) -> str | None:
        """First id found: the pointers in order, then any top-level
        ``<entity>/get/id`` (in document order), then the query parameter."""
        if doc is not None:
            for tokens in self.pointers:
                found = _as_id(resolve(doc, tokens))
                if found is not None:
                    return found
            if self.entity_get_id and isinstance(doc, dict):
                for value in doc.values():
                    if isinstance(value, dict):
                        get = value.get("get")
                        if isinstance(get, dict):
                            found = _as_id(get.get("id"))
                            if found is not None:
                                return found
        if self.query_param is not None:
            return query.get(self.query_param) or None
        return None


# What an event-type path segment may be: RFC 3986 unreserved characters, as in source
# paths; clients send them as they are (others, such as `;` or `:`, some percent-encode).
# The segment becomes the record's ``ce_type`` header, and routing decodes no
# percent-escape, so no control or non-ASCII character can reach a header this way.
EVENT_SEGMENT = r"[A-Za-z0-9._~-]+"
_EVENT_SEGMENT = re.compile(EVENT_SEGMENT)


def plain_segment(segment: str) -> bool:
    """Whether ``segment`` (a raw path segment) may name an event type."""
    return _EVENT_SEGMENT.fullmatch(segment) is not None


TypeOrigin = Literal["provider", "query", "path", "body", "default"]


@dataclass(frozen=True, slots=True)
class EventType:
    """An event type and where it came from, so that a refusal can name it. ``params``:
    the query parameters it was built from (origin ``query``)."""

    value: str
    origin: TypeOrigin
    params: tuple[str, ...] = ()


def resolve_event_type(
    provided: str | None, query: Mapping[str, str], path_segment: str | None, doc: Any
) -> EventType:
    """The first of: the verifier's (provider header), query ``concern`` + ``event``
    joined as ``{concern}.{event}`` (either alone when only one is given), the path's
    trailing segment, the body's first top-level key; else ``unknown``."""
    if provided:
        return EventType(provided, "provider")
    concern, event = query.get("concern"), query.get("event")
    if concern and event:
        return EventType(f"{concern}.{event}", "query", ("concern", "event"))
    if concern:
        return EventType(concern, "query", ("concern",))
    if event:
        return EventType(event, "query", ("event",))
    if path_segment:
        return EventType(path_segment, "path")
    if isinstance(doc, dict) and doc:
        return EventType(str(next(iter(doc))), "body")
    return EventType("unknown", "default")


def event_type(
    provided: str | None, query: Mapping[str, str], path_segment: str | None, doc: Any
) -> str:
    """:func:`resolve_event_type` without the origin."""
    return resolve_event_type(provided, query, path_segment, doc).value


MAX_ID_LENGTH = 256

# What no value copied into a record header may hold: C0 (NUL and TAB included), DEL and
# C1. ASGI servers decode header bytes as latin-1, so a header's bytes 0x80-0x9f arrive
# as C1 characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_fault(value: str) -> str | None:
    """``"contains the control character U+...."`` naming the first one in ``value``;
    None when it has none."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"contains the control character U+{ord(found.group()):04X}"


def _utf8(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON) is no UTF-8
        return False
    return True


def type_fault(value: str) -> str | None:
    """Why ``value`` cannot be a record's ``ce_type`` as it is; None when it can.

    Refused rather than hashed: consumers route on the type, and a hash would route
    nowhere, so the sender is told instead."""
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    fault = control_fault(value)
    if fault is None and not _utf8(value):
        return "is not UTF-8 text (it holds a lone surrogate)"
    return fault


def bounded(value: str) -> str:
    """``value`` itself when short, else ``sha256:<hex>`` of it.

    Ids come from provider headers, bodies and query parameters, and become the Kafka
    key, record headers and file names downstream: a megabyte-long "id" must not.
    Hashing (rather than cutting) keeps two long values distinct and a resent delivery
    equal. A value that is not encodable as UTF-8 is hashed too (record keys and headers
    are UTF-8), and so is one holding a control character, which no record header may
    carry: an id only has to be equal to itself, which its hash is.
    """
    if len(value) <= MAX_ID_LENGTH and _utf8(value) and _CONTROL.search(value) is None:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def event_id(source: str, method: str, query: bytes, body: bytes) -> str:
    """Lowercase hex SHA-256 over the netstrings of source, method, raw query string
    and raw body (netstrings make the field boundaries unambiguous). A provider retry
    of the same delivery gets the same id, so consumers deduplicate it."""
    source_bytes, method_bytes = source.encode(), method.encode()
    # One formatted buffer, one hash call: this runs for every webhook.
    framed = b"%d:%b,%d:%b,%d:%b,%d:%b," % (
        len(source_bytes),
        source_bytes,
        len(method_bytes),
        method_bytes,
        len(query),
        query,
        len(body),
        body,
    )
    return hashlib.sha256(framed).hexdigest()


def digest_id(source: str, body: bytes) -> str:
    """Lowercase hex SHA-256 of source and raw body only: the content a body-only
    signature covers, so an attacker replaying a captured delivery cannot vary it (the
    method, query and id header are not signed by such schemes)."""
    source_bytes = source.encode()
    framed = b"digest:%d:%b,%d:%b," % (len(source_bytes), source_bytes, len(body), body)
    return hashlib.sha256(framed).hexdigest()


def identity(
    policy: str,
    source: str,
    verified_id: str | None,
    id_signed: bool,
    method: str,
    query: bytes,
    body: bytes,
) -> tuple[str, IdOrigin, str]:
    """``(ce_id, ce_idorigin, ce_providerid)`` of a verified request under the source's
    ``event_id`` policy (``auto``, ``provider`` or ``digest``)."""
    if verified_id is None:
        origin = IdOrigin.DIGEST if policy == "digest" else IdOrigin.DERIVED
        return event_id(source, method, query, body), origin, ""
    if policy == "provider" or (policy == "auto" and id_signed):
        return bounded(verified_id), IdOrigin.PROVIDER, ""
    return digest_id(source, body), IdOrigin.DIGEST, bounded(verified_id)
