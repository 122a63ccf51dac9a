"""The admin app both sides serve: probes, metrics, problem answers, counting."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from webhook_common.admin import Probe, ProbeCheck, admin_app


def _client(
    alive: ProbeCheck, ready: ProbeCheck, *, raise_app_exceptions: bool = True
) -> tuple[httpx.AsyncClient, Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    consumed = Counter("test_consumed", "things", ["topic"], registry=registry)
    consumed.labels("webhooks.raw").inc(3)
    answers = Counter("test_admin_requests", "answers", ["path", "status"], registry=registry)
    app = admin_app(
        registry,
        alive=alive,
        ready=ready,
        on_answer=lambda path, status: answers.labels(path, str(status)).inc(),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://admin"), answers, registry


def ok() -> Probe:
    return Probe(True)


def failing() -> Probe:
    return Probe(False, "the fetch loop has not run for 60 s")


async def test_metrics_exposes_the_registry_after_on_scrape() -> None:
    registry = CollectorRegistry()
    scraped = Counter("test_scrapes", "scrapes", registry=registry)

    async def on_scrape() -> None:
        scraped.inc()

    app = admin_app(registry, on_scrape=on_scrape)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "test_scrapes_total 1.0" in r.text  # refreshed before it was rendered


async def test_probes_ok_and_failing() -> None:
    client, answers, _ = _client(ok, ok)
    async with client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
    client, answers, _ = _client(failing, failing)
    async with client:
        for path in ("/healthz", "/readyz"):
            r = await client.get(path)
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            body = r.json()
            assert (body["status"], body["instance"]) == (503, path)
            assert body["type"] == "urn:webhook-gateway:problem:unavailable"
            assert body["detail"] == "the fetch loop has not run for 60 s"
    assert answers.labels("/readyz", "503")._value.get() == 1


async def test_async_probes_and_extra_fields() -> None:
    async def ready() -> Probe:
        return Probe(True, extra={"spool": {"records": 0}})

    client, _, _ = _client(ok, ready)
    async with client:
        assert (await client.get("/readyz")).json() == {"status": "ready", "spool": {"records": 0}}


async def test_unknown_path_and_method_are_problems_and_counted() -> None:
    client, answers, _ = _client(ok, ok)
    async with client:
        r = await client.get("/nope")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Not Found"
        assert r.json()["type"] == "urn:webhook-gateway:problem:not-found"
        r = await client.post("/metrics")
        assert r.status_code == 405
        assert r.json()["title"] == "Method Not Allowed"
        assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert answers.labels("other", "404")._value.get() == 1
    assert answers.labels("/metrics", "405")._value.get() == 1


async def test_failing_probe_is_a_500_problem() -> None:
    def broken() -> Probe:
        raise RuntimeError("boom")

    client, answers, _ = _client(broken, broken, raise_app_exceptions=False)
    async with client:
        r = await client.get("/healthz")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:webhook-gateway:problem:internal-error"
    assert "boom" not in r.text
    assert answers.labels("/healthz", "500")._value.get() == 1
