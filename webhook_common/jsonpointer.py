"""RFC 6901 JSON pointers, as the gateway (entity-id pointers) and the consumers (route
conditions) both read them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

# What :func:`resolve` returns when nothing is at the pointer (``None`` is a JSON value).
MISSING: Final[Any] = object()


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """Split an RFC 6901 JSON pointer into unescaped reference tokens.

    ``""`` is the whole document; otherwise it starts with ``/``; ``~0`` is ``~`` and
    ``~1`` is ``/``; any other ``~`` is an error (:class:`ValueError`).
    """
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"an RFC 6901 JSON pointer starting with '/', not {pointer!r}")
    tokens = []
    for raw in pointer[1:].split("/"):
        rest = raw.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise ValueError(f"an RFC 6901 JSON pointer ('~' only as ~0 or ~1), not {pointer!r}")
        # Order matters: `~01` is the token `~1`, not `/`.
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def resolve(doc: Any, tokens: Sequence[str]) -> Any:
    """The value at ``tokens`` in ``doc``, or :data:`MISSING`."""
    cur = doc
    for token in tokens:
        if isinstance(cur, dict):
            if token not in cur:
                return MISSING
            cur = cur[token]
        elif isinstance(cur, list):
            # RFC 6901 array indexes: digits, no leading zero, no `-` when reading.
            if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
                return MISSING
            index = int(token)
            if index >= len(cur):
                return MISSING
            cur = cur[index]
        else:
            return MISSING
    return cur
