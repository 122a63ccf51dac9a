"""Routes: which sinks an event goes to.

A route matches when every condition it gives holds: ``source`` (exact), ``type`` and
``key`` (shell-style globs, case-sensitive), ``headers`` (exact values of the provider
headers the gateway kept, names case-insensitive) and ``pointer`` (RFC 6901 JSON
pointers into the body; a body that is not JSON matches no pointer). An event goes to
the union of the sinks of every matching route (fan-out), each sink once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import orjson

from consumers.config import MatchConfig, PointerMatch, RouteConfig
from consumers.event import Event
from webhook_common.jsonpointer import MISSING, parse_pointer, resolve

# Route pointers are few and fixed by the config: tokenise each once.
_tokens = functools.lru_cache(maxsize=1024)(parse_pointer)


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer, or :data:`MISSING`."""
    return resolve(doc, _tokens(pointer))


def _same(a: Any, b: Any) -> bool:
    # YAML `equals: 1` must not match JSON `true` (Python has True == 1).
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _pointer_holds(event: Event, test: PointerMatch) -> bool:
    try:
        doc = event.json()
    except orjson.JSONDecodeError:
        return False
    value = resolve_pointer(doc, test.path)
    if test.exists is not None:
        return (value is not MISSING) == test.exists
    return value is not MISSING and _same(value, test.equals)


def matches(match: MatchConfig, event: Event) -> bool:
    if match.source is not None and event.source != match.source:
        return False
    if match.type is not None and not fnmatchcase(event.type, match.type):
        return False
    if match.key is not None and not fnmatchcase(event.key, match.key):
        return False
    if match.headers:
        have = {k.lower(): v for k, v in event.headers.items()}
        for name, value in match.headers.items():
            if have.get(name.lower()) != value:
                return False
    if match.pointer is not None:
        tests = match.pointer if isinstance(match.pointer, list) else [match.pointer]
        if not all(_pointer_holds(event, t) for t in tests):
            return False
    return True


class Router:
    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = list(routes)

    def sinks_for(self, event: Event) -> list[str]:
        """Sink names in route order, each once; empty when no route matches."""
        out: dict[str, None] = {}
        for route in self._routes:
            if matches(route.match, event):
                out.update(dict.fromkeys(route.sinks))
        return list(out)
