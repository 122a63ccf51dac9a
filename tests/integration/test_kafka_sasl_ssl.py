"""Managed-Kafka settings against a real broker: a private KRaft node with a SASL_SSL
listener (a certificate this module makes with openssl, SCRAM and PLAIN users, Kafka's
unsecured OAUTHBEARER tokens), as Confluent Cloud, MSK and Redpanda Cloud present one.

Gateway and consumers deliver end to end over it; a wrong password and an unknown CA
are startup errors naming the key; an unreachable broker leaves both processes up and
not ready until it appears."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from faults.procs import free_port
from gateway.verifiers.crystallize import sign_hmac
from tests.consumers.harness import ConsumerProcess, consumers_running, read_jsonl, wait_until
from tests.gateway.support import GatewayProcess
from tests.integration.secure_kafka import USERS, SecureKafka
from webhook_common.config import KafkaSettings, validate
from webhook_common.kafkaauth import check_access

SECRET = "sasl-signature-secret-0123456789"


def unsecured_token(subject: str) -> str:
    """A JWS with ``alg: none``, what Kafka's default OAUTHBEARER validator accepts."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 3600})}."


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"])
async def test_each_mechanism_produces_and_consumes_over_tls(
    secure_kafka: SecureKafka, tmp_path: Path, mechanism: str
) -> None:
    overrides: dict[str, Any] = {}
    if mechanism == "OAUTHBEARER":
        token = tmp_path / "token"
        token.write_text(unsecured_token("alice") + "\n")
        overrides["sasl_oauth"] = {"type": "file", "path": str(token)}
    kafka = validate(KafkaSettings, secure_kafka.settings(mechanism, **overrides))
    await check_access(kafka)
    topic = await secure_kafka.topic("sasl")
    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over-tls", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **kafka.client_kwargs(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert record.value == b"over-tls"


def write_config(path: Path, kafka: dict[str, Any], raw: str, dlq: str, out: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": kafka,
                "gateway": {"log_format": "text"},
                "sources": [
                    {
                        "name": "crystallize",
                        "path": "/webhooks/crystallize",
                        "verifier": {"type": "crystallize", "mode": "hmac"},
                        "secrets": [SECRET],
                        "topic": raw,
                    }
                ],
                "consumers": {
                    "group": f"g-{uuid.uuid4().hex[:8]}",
                    "topics": [raw],
                    "dlq_topic": dlq,
                    "sinks": {"out": {"type": "file", "path": str(out)}},
                    "routes": [{"name": "all", "sinks": ["out"]}],
                    "commit_interval_ms": 200,
                },
            }
        )
    )
    return path


async def post(client: httpx.AsyncClient, gw: GatewayProcess, n: int) -> int:
    body = orjson.dumps({"order": {"get": {"id": f"order-{n % 3}", "n": n}}})
    r = await client.post(
        gw.url + "/webhooks/crystallize",
        content=body,
        headers={
            "content-type": "application/json",
            "x-crystallize-signature": sign_hmac(SECRET, body),
        },
    )
    return r.status_code


async def readyz(client: httpx.AsyncClient, admin_url: str) -> int:
    try:
        return (await client.get(admin_url + "/readyz")).status_code
    except httpx.TransportError:
        return 0


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    try:
        yield started
    finally:
        for proc in started:
            if isinstance(proc, GatewayProcess):
                proc.stop()
            else:
                proc.stop_quietly()


async def test_gateway_and_consumers_deliver_end_to_end_over_sasl_ssl(
    secure_kafka: SecureKafka, tmp_path: Path, processes: list[Any]
) -> None:
    raw, dlq = await secure_kafka.topic("sasl.raw", 3), await secure_kafka.topic("sasl.dlq")
    out = tmp_path / "events.jsonl"
    config = write_config(tmp_path / "c.yaml", secure_kafka.settings(), raw, dlq, out)
    gw = GatewayProcess(config)
    processes.append(gw)
    consumer = ConsumerProcess(config, tmp_path / "consumer.log").start()
    processes.append(consumer)
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until(lambda: _ready(client, gw.admin_url), 60, "the gateway's /readyz")
        statuses = [await post(client, gw, n) for n in range(12)]
    assert statuses == [202] * 12, gw.log()
    with consumers_running(consumer):
        await consumer.wait_ready()
        await wait_until(lambda: _lines(out, 12), 60, "12 events in the file sink")
    assert sorted(e["body"]["order"]["get"]["n"] for e in read_jsonl(out)) == list(range(12))
    assert USERS["alice"] not in gw.log() + consumer.logs()


async def _ready(client: httpx.AsyncClient, admin_url: str) -> bool:
    return await readyz(client, admin_url) == 200


async def _lines(path: Path, n: int) -> bool:
    return len(await asyncio.to_thread(read_jsonl, path)) >= n


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("side", ["gateway", "consumers"])
async def test_a_wrong_password_is_a_startup_error_naming_the_key(
    secure_kafka: SecureKafka, tmp_path: Path, side: str
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    raw, dlq = await secure_kafka.topic("sasl.raw"), await secure_kafka.topic("sasl.dlq")
    kafka = secure_kafka.settings(sasl_password=wrong)
    config = write_config(tmp_path / "c.yaml", kafka, raw, dlq, tmp_path / "out.jsonl")
    command = "serve" if side == "gateway" else "run"
    port = ["--port", str(free_port())] if side == "gateway" else []
    done = await asyncio.to_thread(
        run_cli, side, command, "--config", str(config), *port, "--admin-port", str(free_port())
    )
    assert done.returncode == 2, done.stderr
    assert "error: kafka.sasl_password: got <redacted>: the broker at 127.0.0.1:" in done.stderr
    assert "refused user 'alice' with SCRAM-SHA-512" in done.stderr
    assert "Traceback" not in done.stderr
    assert wrong not in done.stderr + done.stdout


async def test_a_broker_certificate_from_an_unknown_ca_names_ssl_cafile(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    raw, dlq = await secure_kafka.topic("sasl.raw"), await secure_kafka.topic("sasl.dlq")
    kafka = secure_kafka.settings(ssl_cafile=None)  # the system store: no test CA in it
    config = write_config(tmp_path / "c.yaml", kafka, raw, dlq, tmp_path / "out.jsonl")
    done = await asyncio.to_thread(
        run_cli, "gateway", "serve", "--config", str(config), "--port", str(free_port()),
        "--admin-port", str(free_port()),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "error: kafka.ssl_cafile: missing: expected the CA that signed the certificate" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


async def test_an_unreachable_broker_leaves_both_up_and_not_ready_until_it_appears(
    secure_kafka: SecureKafka, tmp_path: Path, processes: list[Any]
) -> None:
    raw, dlq = await secure_kafka.topic("sasl.raw"), await secure_kafka.topic("sasl.dlq")
    out = tmp_path / "events.jsonl"
    config = write_config(tmp_path / "c.yaml", secure_kafka.settings(), raw, dlq, out)
    await secure_kafka.service.down()
    try:
        gw = GatewayProcess(config)
        processes.append(gw)
        consumer = ConsumerProcess(config, tmp_path / "consumer.log").start()
        processes.append(consumer)
        async with httpx.AsyncClient(timeout=10) as client:
            await gw.wait_healthy()
            await asyncio.sleep(3)  # several connection attempts
            assert gw.proc.poll() is None, gw.log()
            assert consumer.proc is not None
            assert consumer.proc.poll() is None, consumer.logs()
            assert await readyz(client, gw.admin_url) == 503
            assert await readyz(client, consumer.admin_url) == 503
            assert await post(client, gw, 0) == 503
    finally:
        await secure_kafka.service.up()
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until(lambda: _ready(client, gw.admin_url), 90, "the gateway's /readyz")
        assert await post(client, gw, 1) == 202
        await wait_until(lambda: _ready(client, consumer.admin_url), 90, "the consumer's /readyz")
    with consumers_running(consumer):
        await wait_until(lambda: _lines(out, 1), 60, "the event in the file sink")
    assert "Traceback" not in gw.log() + consumer.logs()
