from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry

from consumers.metrics import ConsumerMetrics
from consumers.server import build_app


def _client(alive: bool, ready: bool) -> tuple[httpx.AsyncClient, ConsumerMetrics]:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    metrics.consumed.labels("webhooks.raw").inc(3)
    app = build_app(registry, metrics, lambda: alive, lambda: ready)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://admin"), metrics


async def test_metrics_exposes_the_registry() -> None:
    client, _ = _client(True, True)
    async with client:
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'webhookgw_consumer_consumed_total{topic="webhooks.raw"} 3.0' in r.text


async def test_probes_ok_and_failing() -> None:
    client, metrics = _client(True, True)
    async with client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
    client, metrics = _client(False, False)
    async with client:
        for path in ("/healthz", "/readyz"):
            r = await client.get(path)
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert (body["status"], body["instance"]) == (503, path)
    assert metrics.admin_requests.labels("/readyz", "503")._value.get() == 1


async def test_unknown_path_and_method_are_problems_and_counted() -> None:
    client, metrics = _client(True, True)
    async with client:
        r = await client.get("/nope")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Not Found"
        r = await client.post("/metrics")
        assert r.status_code == 405
        assert r.json()["title"] == "Method Not Allowed"
    assert metrics.admin_requests.labels("other", "404")._value.get() == 1
    assert metrics.admin_requests.labels("/metrics", "405")._value.get() == 1


async def test_failing_probe_is_a_500_problem() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    app = build_app(registry, metrics, broken, broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        r = await client.get("/healthz")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "boom" not in r.text
    assert metrics.admin_requests.labels("/healthz", "500")._value.get() == 1
