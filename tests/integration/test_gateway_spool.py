"""The durable spool against a real Kafka: a private broker (its own port and state
directory, never the shared one) is stopped while signed requests arrive; every one is
answered 202, and once the broker is back every record is in Kafka in order, once,
byte for byte. Also across a gateway SIGKILLed while holding a spool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from faults.procs import LocalService
from faults.scenarios import kafka_port_pair
from gateway.spool import list_segments
from gateway.verifiers.crystallize import sign_hmac
from tests.gateway.support import GatewayProcess, read_topic

SECRET = "spool-it-secret-5c1e"
TOPIC = "spool.it"


@pytest.fixture
async def private_kafka(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[LocalService]:
    """A broker of this test alone (``kafka_bootstrap`` only marks the test and skips it
    where the shared Kafka is unavailable, as every Kafka test)."""
    kafka = LocalService("kafka", kafka_port_pair(24000, 27000), tmp_path / "kafka")
    try:
        await kafka.up()  # inside: a failed `up` may still have started the broker
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{kafka.port}")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, 1, 1)])
        finally:
            await admin.close()
        yield kafka
    finally:
        await kafka.down()


def write_config(path: Path, kafka: LocalService, spool: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": f"127.0.0.1:{kafka.port}"},
                "gateway": {
                    "producer": {"ack_timeout_seconds": 1.0, "linger_ms": 2},
                    "spool": {"enabled": True, "path": str(spool)},
                    "shutdown_grace_seconds": 10,
                    "log_format": "text",
                },
                "sources": [
                    {
                        "name": "crystallize",
                        "verifier": {"type": "crystallize", "mode": "hmac"},
                        "secrets": [SECRET],
                        "topic": TOPIC,
                    }
                ],
            }
        )
    )
    return path


def body(n: int) -> bytes:
    # Odd spacing and escapes: what Kafka gets must be these bytes, not a re-encoding.
    return b' {"order": {"get": {"id": "o-%d"}}, "n": %d, "s": "caf\\u00e9 \xc3\xa9"}\n' % (
        n % 4,
        n,
    )


async def send(c: httpx.AsyncClient, gw: GatewayProcess, n: int) -> tuple[int, str]:
    payload = body(n)
    r = await c.post(
        gw.url + "/webhooks/crystallize",
        content=payload,
        headers={"x-crystallize-signature": sign_hmac(SECRET, payload)},
    )
    return r.status_code, r.json().get("id", "") if r.status_code == 202 else r.text


async def readyz(c: httpx.AsyncClient, gw: GatewayProcess) -> tuple[int, dict[str, Any]]:
    r = await c.get(gw.admin_url + "/readyz")
    return r.status_code, r.json()


async def wait_drained(c: httpx.AsyncClient, gw: GatewayProcess, within: float = 120) -> None:
    async with asyncio.timeout(within):
        while True:
            status, detail = await readyz(c, gw)
            if status == 200 and detail["spool"]["records"] == 0:
                return
            await asyncio.sleep(0.5)


def assert_in_kafka_in_order(records: list[Any], ids: list[str], numbers: range) -> None:
    got = [dict(r.headers)["ce_id"].decode() for r in records]
    assert got == ids  # one partition: acceptance order, each exactly once
    assert [r.value for r in records] == [body(n) for n in numbers]
    assert [r.key for r in records] == [b"o-%d" % (n % 4) for n in numbers]


async def test_kafka_down_every_request_202_then_all_delivered_in_order(
    private_kafka: LocalService, tmp_path: Path
) -> None:
    gw = GatewayProcess(write_config(tmp_path / "gw.yaml", private_kafka, tmp_path / "spool"))
    try:
        await gw.wait_healthy()
        async with httpx.AsyncClient(timeout=30) as c:
            before = [await send(c, gw, n) for n in range(10)]
            await private_kafka.down()
            during = [await send(c, gw, n) for n in range(10, 50)]
            status, detail = await readyz(c, gw)
            assert status == 200, detail
            assert detail["spool"]["records"] == 40
            assert "kafka" in detail  # why Kafka is not ready, for the operator
            assert list_segments(tmp_path / "spool")
            await private_kafka.up()
            await wait_drained(c, gw)
            metrics = (await c.get(gw.admin_url + "/metrics")).text
    finally:
        gw.stop()
    assert [s for s, _ in before + during] == [202] * 50, gw.log()
    records = await read_topic(f"127.0.0.1:{private_kafka.port}", TOPIC, 50, within=60)
    assert_in_kafka_in_order(records, [i for _, i in before + during], range(50))
    spooled = {
        line.split("reason=")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("webhookgw_ingress_spooled_total{")
    }
    # The first request after the broker stopped was not acknowledged (a timeout, or an
    # error the client reported); every later one queued behind it.
    assert spooled.pop("backlog") == 39, spooled
    assert sum(spooled.values()) == 1, spooled
    assert set(spooled) <= {"timeout", "error"}, spooled
    assert "webhookgw_ingress_spool_drained_total 40.0" in metrics
    # The process's own collectors and build info, on the gateway's registry.
    assert "\nprocess_resident_memory_bytes " in metrics
    assert 'webhookgw_build_info{component="gateway",' in metrics


async def test_sigkilled_gateway_holding_a_spool_drains_it_after_restart(
    private_kafka: LocalService, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = GatewayProcess(write_config(tmp_path / "gw1.yaml", private_kafka, spool))
    try:
        await first.wait_healthy()
        async with httpx.AsyncClient(timeout=30) as c:
            before = [await send(c, first, n) for n in range(5)]
            await private_kafka.down()
            during = [await send(c, first, n) for n in range(5, 35)]
        first.proc.kill()  # SIGKILL: no shutdown, no drain
        await first.wait_exit(30)
    finally:
        first.stop()
    assert [s for s, _ in before + during] == [202] * 35, first.log()
    assert list_segments(spool)

    await private_kafka.up()
    second = GatewayProcess(write_config(tmp_path / "gw2.yaml", private_kafka, spool))
    try:
        await second.wait_healthy()
        async with httpx.AsyncClient(timeout=30) as c:
            await wait_drained(c, second)
    finally:
        second.stop()
    assert "spool: 30 record(s)" in second.log()
    records = await read_topic(f"127.0.0.1:{private_kafka.port}", TOPIC, 35, within=60)
    assert_in_kafka_in_order(records, [i for _, i in before + during], range(35))
