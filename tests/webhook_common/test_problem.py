"""Problem details bodies (RFC 9457)."""

from __future__ import annotations

import orjson

from webhook_common import problem


def test_extension_members_follow_the_standard_ones_and_cannot_replace_them() -> None:
    p = problem.Problem(
        503, "unavailable", "not ready", extensions={"spool": {"records": 3}, "status": 200}
    )
    body = orjson.loads(p.body("/readyz"))
    assert list(body)[:5] == ["type", "title", "status", "detail", "instance"]
    assert body["status"] == 503
    assert body["spool"] == {"records": 3}


def test_without_extensions_the_body_has_the_standard_members_only() -> None:
    body = orjson.loads(problem.unavailable("down", 1).body("/x"))
    assert set(body) == {"type", "title", "status", "detail", "instance"}
