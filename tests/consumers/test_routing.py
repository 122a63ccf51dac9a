from __future__ import annotations

from typing import Any

import pytest

from consumers.config import MatchConfig, RouteConfig
from consumers.routing import Router, matches, resolve_pointer
from tests.consumers.fakes import event


def m(**kw: Any) -> MatchConfig:
    return MatchConfig.model_validate(kw)


def test_empty_match_matches_everything() -> None:
    assert matches(m(), event())


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"source": "crystallize"}, True),
        ({"source": "crystal"}, False),
        ({"type": "order.*"}, True),
        ({"type": "order.updated"}, False),
        ({"type": "Order.*"}, False),  # globs are case-sensitive
        ({"key": "ord-?"}, True),
        ({"key": "cust-*"}, False),
        ({"headers": {"X-Tenant": "acme"}}, True),  # header names are case-insensitive
        ({"headers": {"x-tenant": "other"}}, False),
        ({"headers": {"x-missing": "acme"}}, False),
        ({"pointer": {"path": "/order/total", "equals": 12}}, True),
        ({"pointer": {"path": "/order/total", "equals": 13}}, False),
        ({"pointer": {"path": "/order/paid", "equals": True}}, True),
        ({"pointer": {"path": "/order/items/1/sku", "equals": "b"}}, True),
        ({"pointer": {"path": "/order/items/2/sku", "exists": True}}, False),
        ({"pointer": {"path": "/order/a~1b", "exists": True}}, True),
        ({"pointer": {"path": "/order/missing", "exists": False}}, True),
        ({"pointer": {"path": "/order/total", "exists": False}}, False),
        (
            {"pointer": [{"path": "/order/paid", "exists": True}, {"path": "/x", "exists": True}]},
            False,
        ),
        ({"source": "crystallize", "type": "order.*", "key": "ord-1"}, True),
        ({"source": "crystallize", "type": "order.*", "key": "ord-2"}, False),
    ],
)
def test_conditions(match: dict[str, Any], expected: bool) -> None:
    body = (
        b'{"order": {"total": 12, "paid": true, "items": [{"sku": "a"}, {"sku": "b"}], "a/b": 0}}'
    )
    ev = event(key="ord-1", body=body, headers={"x-tenant": "acme"})
    assert matches(m(**match), ev) is expected


def test_bool_and_number_are_different() -> None:
    ev = event(body=b'{"flag": true}')
    assert not matches(m(pointer={"path": "/flag", "equals": 1}), ev)


def test_pointer_never_matches_a_non_json_body() -> None:
    ev = event(body=b"plain text")
    assert not matches(m(pointer={"path": "/a", "exists": False}), ev)
    assert matches(m(type="order.*"), ev)


def test_resolve_pointer_rfc6901_rules() -> None:
    doc = {"a": [10, 20], "m~n": 1, "": 2}
    assert resolve_pointer(doc, "") == doc
    assert resolve_pointer(doc, "/a/1") == 20
    assert resolve_pointer(doc, "/m~0n") == 1
    assert resolve_pointer(doc, "/") == 2
    missing = resolve_pointer(doc, "/a/01")  # leading zeros are not indexes
    assert missing is resolve_pointer(doc, "/nope")


def test_router_fans_out_to_union_of_sinks_in_order() -> None:
    routes = [
        RouteConfig(name="orders", match=m(type="order.*"), sinks=["pg", "file"]),
        RouteConfig(name="all", sinks=["file", "http"]),
        RouteConfig(name="never", match=m(source="other"), sinks=["log"]),
    ]
    router = Router(routes)
    assert router.sinks_for(event()) == ["pg", "file", "http"]
    assert router.sinks_for(event(type_="customer.created")) == ["file", "http"]
    assert Router([routes[2]]).sinks_for(event()) == []
