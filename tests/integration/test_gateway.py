"""`python -m gateway serve` against the real broker: every status, records read back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.verifiers.crystallize import sign_hmac, sign_jwt
from tests.gateway.support import GatewayProcess, read_topic
from tests.integration.conftest import TopicFactory
from webhook_common.contract import parse_time

SECRET = "integration-secret-4c1d9e"
LIMIT = 4096


def write_config(tmp_path: Path, bootstrap: str, topic: str, missing_topic: str) -> Path:
    crystallize: dict[str, Any] = {
        "verifier": {"type": "crystallize", "mode": "auto"},
        "secrets": ["${TEST_CRYSTALLIZE_SECRET}"],
        "body_limit": LIMIT,
    }
    data = {
        "kafka": {"bootstrap_servers": bootstrap},
        "gateway": {
            "producer": {"ack_timeout_seconds": 1.5},
            "retry_after_seconds": 2,
            "log_format": "text",
        },
        "sources": [
            {"name": "crystallize", "topic": topic, **crystallize},
            {"name": "lost", "topic": missing_topic, **crystallize},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for gw in started:
        gw.stop()


def headers_of(record: Any) -> dict[str, str]:
    names = [name for name, _ in record.headers]
    assert len(names) == len(set(names)), names
    return {name: value.decode() for name, value in record.headers}


async def test_every_status_against_real_kafka(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    tmp_path: Path,
    gateway_factory: list[GatewayProcess],
) -> None:
    topic = await kafka_topic("gw-status", partitions=3)
    missing_topic = f"gw-missing.{uuid.uuid4().hex[:12]}"
    gw = GatewayProcess(
        write_config(tmp_path, kafka_bootstrap, topic, missing_topic),
        env={"TEST_CRYSTALLIZE_SECRET": SECRET},
    )
    gateway_factory.append(gw)
    await gw.wait_healthy()
    base = gw.url + "/webhooks/crystallize"
    before = datetime.now(UTC) - timedelta(seconds=1)

    order = b'{"order":{"get":{"id":"ord-1","total":{"gross":45.1125,"net":1.0}}}}'
    # JavaScript-quirk body: a number beyond 2^53 and an exponent, signed as Crystallize does.
    item = b'{"item":{"get":{"id":"item-7","n":12345678901234567890,"e":1E+2,"s":"\\u00e5"}}}'
    get_url = base + "?id=cust-3&concern=customer&event=updated"
    jwt_item = sign_jwt(SECRET, base + "/item.published", "POST", item)
    accepted: list[tuple[httpx.Response, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=10) as c:
        cases: list[dict[str, Any]] = [
            {
                "method": "POST",
                "url": base + "?concern=order&event=created",
                "content": order,
                "signature": sign_hmac(SECRET, order),
                "key": b"ord-1",
                "type": "order.created",
                "query": "concern=order&event=created",
            },
            {
                "method": "POST",
                "url": base + "/item.published",
                "content": item,
                "signature": jwt_item,
                "key": b"item-7",
                "type": "item.published",
                "query": "",
            },
            {
                "method": "GET",
                "url": get_url,
                "content": b"",
                "signature": sign_jwt(SECRET, get_url, "GET", b""),
                "key": b"cust-3",
                "type": "customer.updated",
                "query": "id=cust-3&concern=customer&event=updated",
            },
        ]
        for case in cases:
            r = await c.request(
                case["method"],
                case["url"],
                content=case["content"],
                headers={"x-crystallize-signature": case["signature"]},
            )
            assert r.status_code == 202, r.text
            accepted.append((r, case))

        statuses: dict[int, httpx.Response] = {}
        bad_json = b"{not json"
        statuses[400] = await c.post(
            base, content=bad_json, headers={"x-crystallize-signature": sign_hmac(SECRET, bad_json)}
        )
        statuses[401] = await c.post(
            base, content=order, headers={"x-crystallize-signature": sign_hmac("wrong", order)}
        )
        statuses[404] = await c.post(gw.url + "/webhooks/nope", content=order)
        statuses[405] = await c.request("OPTIONS", base)
        big = b'{"id":"' + b"x" * LIMIT + b'"}'
        statuses[413] = await c.post(
            base, content=big, headers={"x-crystallize-signature": sign_hmac(SECRET, big)}
        )

        async def chunks() -> Any:
            for _ in range(50):
                yield b" " * 1024

        streamed_413 = await c.post(base, content=chunks())
        statuses[503] = await c.post(
            gw.url + "/webhooks/lost",
            content=order,
            headers={"x-crystallize-signature": sign_hmac(SECRET, order)},
        )
        ready = await c.get(gw.admin_url + "/readyz")
        metrics = (await c.get(gw.admin_url + "/metrics")).text

    for status, response in [*statuses.items(), (413, streamed_413)]:
        assert response.status_code == status, (status, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == status
        assert set(problem) == {"type", "title", "status", "detail", "instance"}
        assert SECRET not in response.text
    assert statuses[405].headers["allow"] == "GET, POST, PUT, PATCH, DELETE"
    assert statuses[503].headers["retry-after"] == "2"
    # A topic Kafka does not have: 503 at once, naming it (never spooled as retriable).
    assert "does not exist in Kafka" in statuses[503].json()["detail"]
    assert ready.status_code == 503
    assert missing_topic in ready.json()["detail"]
    for status in (202, 400, 401, 405, 413, 503):
        expected = 3 if status == 202 else 2 if status == 413 else 1
        source = "lost" if status == 503 else "crystallize"
        assert (
            f'webhookgw_ingress_requests_total{{source="{source}",status="{status}"}} '
            f"{float(expected)}"
        ) in metrics
    assert 'webhookgw_ingress_requests_total{source="",status="404"} 1.0' in metrics

    records = await read_topic(kafka_bootstrap, topic, expected=3)
    assert len(records) == 3, "only the three accepted requests may be in Kafka"
    by_id = {headers_of(r)["ce_id"]: r for r in records}
    for response, case in accepted:
        event_id = response.json()["id"]
        record = by_id[event_id]
        assert record.key == case["key"]
        assert record.value == case["content"]  # byte for byte
        headers = headers_of(record)
        received = parse_time(headers.pop("ce_time"))
        assert before <= received <= datetime.now(UTC)
        assert headers == {
            "ce_specversion": "1.0",
            "ce_id": event_id,
            "ce_source": "crystallize",
            "ce_type": case["type"],
            "ce_subject": case["key"].decode(),
            "content-type": "application/json",
            "ce_httpmethod": case["method"],
            "ce_httpquery": case["query"],
            "ce_idorigin": "derived",  # Crystallize sends no id: derived, kept briefly
            "http-header-x-crystallize-signature": case["signature"],
        }

    # The gateway never created the missing topic (no broker auto-creation either).
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert missing_topic not in await admin.list_topics()
    finally:
        await admin.close()

    gw.terminate()
    assert await gw.wait_exit(30) == 0, gw.log()
    assert SECRET not in gw.log()


async def test_the_admin_port_can_bind_another_address_than_the_webhook_port(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    tmp_path: Path,
    gateway_factory: list[GatewayProcess],
) -> None:
    topic = await kafka_topic("admin-host")
    config = write_config(tmp_path, kafka_bootstrap, topic, topic)
    env = {"TEST_CRYSTALLIZE_SECRET": SECRET}
    gw = GatewayProcess(config, env, admin_host="127.0.0.2")
    gateway_factory.append(gw)
    await gw.wait_healthy()  # on 127.0.0.2
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(gw.admin_url + "/metrics")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{gw.admin_port}/metrics")
        # The webhook port is where it was, and does not serve the admin paths.
        assert (await client.get(gw.url + "/metrics")).status_code == 404
