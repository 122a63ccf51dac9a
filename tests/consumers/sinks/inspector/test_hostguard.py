"""The ``Host`` allow-list (DNS-rebinding guard), alone and in front of every route."""

from __future__ import annotations

import pytest

from consumers.sinks.inspector.hostguard import HostAllowList, host_name
from tests.consumers.sinks.inspector.support import Started, is_problem


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("localhost:8090", "localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:8090", "[::1]"),
        ("[::1]", "[::1]"),
        ("", ""),
    ],
)
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_loopback_bound_and_allowed_names_pass_without_case() -> None:
    hosts = HostAllowList("10.0.0.7", ["Inspector.Dev.Example"])
    for header in ("localhost:8090", "LOCALHOST", "127.0.0.1", "[::1]:1", "10.0.0.7:8090",
                   "inspector.dev.example:8090"):  # fmt: skip
        assert hosts.allows(header), header
    for header in ("evil.example", "evil.example:8090", "", "127.0.0.2", "10.0.0.70"):
        assert not hosts.allows(header), header


async def test_foreign_host_header_is_refused_and_counted(started: Started) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read events.
    _, client, registry = started
    doc = is_problem(await client.get("/api/events", headers={"host": "evil.example"}), 403)
    assert "Host" in doc["detail"]
    ok = await client.get("/api/events", headers={"host": "localhost:1"})
    assert ok.status_code == 200
    count = registry.get_sample_value(
        "webhookgw_inspector_requests_total",
        {"sink": "inspector", "path": "/api/events", "status": "403"},
    )
    assert count == 1


async def test_every_route_is_guarded(started: Started) -> None:
    _, client, _ = started
    evil = {"host": "evil.example"}
    for path in ("/", "/api/events", "/api/info", "/api/stream"):
        is_problem(await client.get(path, headers=evil), 403)
    is_problem(await client.post("/api/replay", json={}, headers=evil), 403)
