"""Off loopback the inspector requires an access token on every route."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumers.sinks.inspector import InspectorConfig, InspectorSink
from consumers.sinks.inspector.hostguard import is_loopback
from tests.consumers.sinks.inspector.support import context, is_problem

TOKEN = "inspector-access-0123456789"
ROUTES = [
    ("GET", "/"),
    ("GET", "/api/events"),
    ("GET", "/api/info"),
    ("GET", "/api/stream"),
    ("POST", "/api/replay"),
]


def test_a_non_loopback_bind_without_a_token_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"access_token, since host .0\.0\.0\.0."):
        InspectorConfig(host="0.0.0.0")
    with pytest.raises(ValidationError, match="at least 16 characters"):
        InspectorConfig(host="0.0.0.0", access_token="short")
    assert InspectorConfig(host="127.0.0.2").access_token is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
     ("inspector.internal", False)],
)  # fmt: skip
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
async def exposed() -> AsyncIterator[httpx.AsyncClient]:
    config = InspectorConfig(host="0.0.0.0", port=0, access_token=TOKEN)
    sink = InspectorSink("inspector", config, context(CollectorRegistry()))
    await sink.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.port}") as client:
            yield client
    finally:
        await sink.aclose()


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_a_request_without_the_token(
    exposed: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await exposed.request(method, path)
    doc = is_problem(r, 401)
    assert doc["type"].endswith(":unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    wrong = await exposed.request(method, path, headers={"authorization": "Bearer x" + TOKEN})
    is_problem(wrong, 401)


async def test_a_bearer_token_opens_the_api(exposed: httpx.AsyncClient) -> None:
    r = await exposed.get("/api/info", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.json()["sink"] == "inspector"


async def test_the_page_link_sets_a_cookie_and_drops_the_token_from_the_address(
    exposed: httpx.AsyncClient,
) -> None:
    is_problem(await exposed.get("/", params={"access_token": "wrong-" + TOKEN}), 401)
    r = await exposed.get("/", params={"access_token": TOKEN})
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    page = await exposed.get("/")  # the client keeps the cookie
    assert page.status_code == 200
    assert "inspector-token" in page.text
    assert (await exposed.get("/api/events")).status_code == 200
