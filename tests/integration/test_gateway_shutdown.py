"""SIGTERM under load loses nothing: every id answered 202 is in Kafka."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import yaml

from gateway.verifiers.crystallize import sign_hmac
from tests.gateway.support import GatewayProcess, read_topic
from tests.integration.conftest import TopicFactory

SECRET = "shutdown-secret-77aa01"
REQUESTS = 400
CONCURRENCY = 40
SIGTERM_AFTER = 100


async def test_sigterm_under_load_loses_no_accepted_event(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topic("gw-sigterm", partitions=3)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "gateway": {"shutdown_grace_seconds": 20, "log_format": "text"},
                "sources": [
                    {
                        "name": "crystallize",
                        "verifier": {"type": "crystallize", "mode": "hmac"},
                        "secrets": [SECRET],
                        "topic": topic,
                    }
                ],
            }
        )
    )
    gw = GatewayProcess(config)
    try:
        await gw.wait_healthy()
        accepted: set[str] = set()
        outcomes: dict[str, int] = {}
        answered = 0
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(c: httpx.AsyncClient, i: int) -> None:
            nonlocal answered
            body = b'{"order":{"get":{"id":"o-%d","n":%d}}}' % (i % 37, i)
            async with slots:
                try:
                    r = await c.post(
                        gw.url + "/webhooks/crystallize",
                        content=body,
                        headers={"x-crystallize-signature": sign_hmac(SECRET, body)},
                    )
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                else:
                    outcome = str(r.status_code)
                    if r.status_code == 202:
                        accepted.add(r.json()["id"])
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            answered += 1
            if answered == SIGTERM_AFTER:
                gw.terminate()

        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(timeout=30, limits=limits) as c, asyncio.timeout(90):
            await asyncio.gather(*(one(c, i) for i in range(REQUESTS)))
        assert await gw.wait_exit(60) == 0, gw.log()
    finally:
        gw.stop()

    assert len(accepted) >= SIGTERM_AFTER - CONCURRENCY, outcomes
    # Nothing but 202 or a refused/closed connection: no 5xx for a shutting-down gateway.
    assert set(outcomes) <= {"202", "ConnectError", "ReadError", "RemoteProtocolError"}, outcomes
    records = await read_topic(kafka_bootstrap, topic, expected=len(accepted))
    in_kafka = {dict(r.headers)["ce_id"].decode() for r in records}
    assert accepted <= in_kafka, f"lost {len(accepted - in_kafka)} accepted events; {outcomes}"
    assert "shutting down" in gw.log()
