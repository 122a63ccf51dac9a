"""JavaScript-exact JSON: ``JSON.stringify(JSON.parse(raw))`` reproduced in Python.

Crystallize signs ``sha256(JSON.stringify({url, method, body}))`` where ``body`` is
``JSON.parse(rawBody)``, so verifying means re-serialising the body exactly as V8 does.
Python's ``json.dumps`` differs in ways that change the hash:

- JavaScript has one number type, the IEEE double: ``1.0`` prints ``1``, ``1e21`` prints
  ``1e+21``, ``1e-7`` prints ``1e-7``, ``-0`` prints ``0``, integers beyond 2^53 lose
  precision, and overflow to ``Infinity`` prints ``null``.
- Object keys that are array indices ("0" … "4294967294") come first in ascending
  numeric order, then the other keys in insertion order.
- A duplicate key keeps the position of its first occurrence and the last value.
- Strings escape only ``"``, ``\\`` and control characters; a lone UTF-16 surrogate
  (possible through ``\\udXXX`` escapes) is written back as a lowercase escape.

Parsing uses orjson (fast, strict RFC 8259, correctly rounded doubles, integers beyond
64 bits already become doubles) and falls back to the standard library only for inputs
orjson refuses that JavaScript accepts: lone surrogate escapes and numbers that overflow
to infinity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Final, NoReturn, TypeAlias

import orjson

from webhook_common.errors import WebhookGatewayError

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

# Integers in this range are exact doubles whose shortest form is the integer itself.
_MAX_SAFE: Final = 2**53
# ECMAScript "array index": a canonical numeric string below 2^32 - 1.
_MAX_ARRAY_INDEX: Final = 2**32 - 2
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

# The C implementation escapes exactly what JSON.stringify escapes for well-formed text
# (", \, \b \f \n \r \t, other controls as lowercase \u00XX) and leaves the rest raw.
_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


class NotJsonError(WebhookGatewayError):
    """The bytes are not a document JavaScript's ``JSON.parse`` accepts."""


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes) -> JsonValue:
    """Parse ``raw`` with ``JSON.parse`` semantics (numbers may stay ``int`` when exact).

    Raises :class:`NotJsonError` for anything ``JSON.parse`` would throw on, and also for
    nesting deeper than about a thousand levels (JavaScript accepts it; we fail closed
    rather than recurse without bound).
    """
    try:
        return orjson.loads(raw)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError as exc:
        first_error = exc
    try:
        text = raw.decode("utf-8")
        value: JsonValue = json.loads(
            text, parse_int=float, parse_float=float, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError):
        raise NotJsonError(f"body is not JSON: {first_error}") from None
    return value


def format_number(value: float) -> str:
    """Format a double as ECMAScript ``Number::toString`` does."""
    if value != value or value in (float("inf"), float("-inf")):
        return "null"  # JSON.stringify writes NaN and ±Infinity as null
    if value.is_integer() and -_MAX_SAFE <= value <= _MAX_SAFE:
        return str(int(value))  # also turns -0.0 into "0"
    # repr() gives the shortest digits that round-trip, nearest to the value, which is
    # exactly the digit string ECMAScript asks for; only the layout rules differ.
    text = repr(value)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exp_text = text.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    digits = all_digits.lstrip("0")
    stripped = digits.rstrip("0")
    trailing = len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    # value = digits * 10**(n - k)
    n = k + trailing + (int(exp_text) if exp_text else 0) - len(frac_part)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exponent = n - 1
    exp_sign = "+" if exponent >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{head}e{exp_sign}{abs(exponent)}"


def _is_array_index(key: str) -> bool:
    return (
        key.isascii()
        and key.isdigit()
        and (key[0] != "0" or len(key) == 1)
        and len(key) <= 10
        and int(key) <= _MAX_ARRAY_INDEX
    )


def _ordered_keys(obj: dict[str, JsonValue]) -> list[str] | None:
    """Keys in JavaScript property order, or None when insertion order already is."""
    index_keys = [k for k in obj if k[:1].isdigit() and _is_array_index(k)]
    if not index_keys:
        return None
    index_keys.sort(key=int)
    index_set = set(index_keys)
    return index_keys + [k for k in obj if k not in index_set]


def _dump(value: JsonValue, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_encode_str(value))  # type: ignore[arg-type]
    elif kind is dict:
        obj: dict[str, JsonValue] = value  # type: ignore[assignment]
        if not obj:
            out.append("{}")
            return
        keys = _ordered_keys(obj)
        sep = "{"
        for key in obj if keys is None else keys:
            out.append(sep)
            out.append(_encode_str(key))
            out.append(":")
            _dump(obj[key], out)
            sep = ","
        out.append("}")
    elif kind is int:
        number: int = value  # type: ignore[assignment]
        if -_MAX_SAFE <= number <= _MAX_SAFE:
            out.append(str(number))
        else:
            out.append(format_number(float(number)))
    elif kind is float:
        out.append(format_number(value))  # type: ignore[arg-type]
    elif kind is list:
        items: list[JsonValue] = value  # type: ignore[assignment]
        if not items:
            out.append("[]")
            return
        sep = "["
        for item in items:
            out.append(sep)
            _dump(item, out)
            sep = ","
        out.append("]")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    else:
        raise TypeError(f"not a JSON value: {kind.__name__}")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def stringify(value: JsonValue) -> str:
    """``JSON.stringify(value)`` for a value from :func:`parse` (or built from str/dict/list).

    Raises :class:`NotJsonError` when the value nests too deeply to serialise.
    """
    out: list[str] = []
    try:
        _dump(value, out)
    except RecursionError:
        raise NotJsonError("JSON value nests too deeply") from None
    text = "".join(out)
    # Surrogates can only sit inside string literals, so escaping them in the whole
    # output equals escaping them string by string (well-formed JSON.stringify).
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub(_escape_surrogate, text)
    return text


def js_stringify(raw: bytes) -> str:
    """``JSON.stringify(JSON.parse(raw))``; raises :class:`NotJsonError` if not JSON."""
    return stringify(parse(raw))


def stringify_request(url: str, method: str, body: bytes) -> str:
    """``JSON.stringify({url, method, body})`` with ``body`` = ``JSON.parse(raw)``, or
    ``null`` when the raw body is empty (Crystallize's signed challenge)."""
    parsed = None if not body else parse(body)
    return stringify({"url": url, "method": method, "body": parsed})
