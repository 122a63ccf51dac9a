"""The optional per-source rate limit: token bucket, 429 + Retry-After, counted."""

from __future__ import annotations

import httpx
import pytest

from gateway.ratelimit import TokenBucket
from tests.gateway.support import SIG_HEADER, build, config, metric, sign
from webhook_common.errors import ConfigError

SECRET = "rate-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.5
    assert bucket.take() == 0.0
    assert bucket.take() > 0
    clock.now += 60  # refills only up to the burst
    assert [bucket.take() == 0.0 for _ in range(4)] == [True, True, True, False]


def test_retry_after_is_whole_seconds_never_zero() -> None:
    assert TokenBucket.retry_after(0.01) == 1
    assert TokenBucket.retry_after(1.2) == 2


def test_rate_limit_config_is_validated() -> None:
    source = {"name": "s", "verifier": {"type": "body-hmac"}, "secrets": ["x"]}
    with pytest.raises(ConfigError, match=r"rate_limit\.per_second"):
        config([{**source, "rate_limit": {"per_second": 0}}])
    with pytest.raises(ConfigError, match=r"rate_limit\.burst"):
        config([{**source, "rate_limit": {"per_second": 1, "burst": 0}}])


async def test_over_the_limit_is_429_with_retry_after_and_counted() -> None:
    source = {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET],
        # One request per 100 s: the second request within the test is always over.
        "rate_limit": {"per_second": 0.01, "burst": 1},
    }
    app, _, producer, registry = build([source], {"api_docs": "webhook"})
    body = b'{"id": "1"}'
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
    ) as c:
        first = await c.post(
            "/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)}
        )
        second = await c.post(
            "/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)}
        )
        openapi = (await c.get("/openapi.json")).json()
    assert first.status_code == 202
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["type"] == "urn:webhook-gateway:problem:rate-limited"
    assert 1 <= int(second.headers["retry-after"]) <= 100
    assert len(producer.records) == 1
    assert metric(registry, "webhookgw_ingress_rate_limited_total", source="shop") == 1
    assert metric(registry, "webhookgw_ingress_requests_total", source="shop", status="429") == 1
    assert "429" in openapi["paths"]["/webhooks/shop"]["post"]["responses"]


async def test_no_rate_limit_by_default() -> None:
    source = {"name": "shop", "verifier": {"type": "body-hmac"}, "secrets": [SECRET]}
    app, _, producer, _ = build([source], {"api_docs": "webhook"})
    body = b'{"id": "1"}'
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
    ) as c:
        for _ in range(50):
            r = await c.post(
                "/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)}
            )
            assert r.status_code == 202
        openapi = (await c.get("/openapi.json")).json()
    assert len(producer.records) == 50
    assert "429" not in openapi["paths"]["/webhooks/shop"]["post"]["responses"]
