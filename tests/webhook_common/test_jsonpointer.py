from __future__ import annotations

import pytest

from webhook_common.jsonpointer import MISSING, parse_pointer, resolve


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", ()),
        ("/", ("",)),
        ("/order/get/id", ("order", "get", "id")),
        ("/a~1b/c~0d", ("a/b", "c~d")),
        ("/~01", ("~1",)),
        ("/0", ("0",)),
    ],
)
def test_parse_pointer(pointer: str, tokens: tuple[str, ...]) -> None:
    assert parse_pointer(pointer) == tokens


@pytest.mark.parametrize("pointer", ["order/get", "/a~2", "/a~", "#/a"])
def test_parse_pointer_rejects(pointer: str) -> None:
    with pytest.raises(ValueError, match="RFC 6901"):
        parse_pointer(pointer)


def test_resolve_objects_and_arrays() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}], "x/y": "slash", "": "empty"}
    assert resolve(doc, parse_pointer("/a/1/b")) == 2
    assert resolve(doc, parse_pointer("/x~1y")) == "slash"
    assert resolve(doc, parse_pointer("/")) == "empty"
    for missing in ("/a/2/b", "/a/01/b", "/a/-", "/nope", "/a/0/b/c"):
        assert resolve(doc, parse_pointer(missing)) is MISSING
