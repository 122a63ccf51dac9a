"""Security of a real run: secrets never leak; the admin port is not the public one.

One run of ``gateway serve`` and ``consumers run`` (subprocesses, DEBUG logging) with
known secrets in the config: the webhook signature secrets, the Kafka SASL password
(SCRAM over TLS to a broker that checks it) and an HTTP sink's signing secret. The run
sees every path: accepted, unsigned, mis-signed, oversized, unknown paths, a sink that
fails then recovers, the dead-letter topic, and SIGTERM. Then every log line of both
processes, every error body and both ``/metrics`` pages are searched for the secrets.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from gateway.verifiers.crystallize import sign_hmac
from tests.consumers.harness import ConsumerProcess, TargetServer, wait_until
from tests.gateway.support import GatewayProcess
from tests.integration.secure_kafka import USERS, SecureKafka

PATH = "/webhooks/crystallize"


def leaks(secret: str, text: str) -> list[str]:
    """The forms of ``secret`` found in ``text``: as is, URL-quoted, base64, hex."""
    forms = {
        "plain": secret,
        "quoted": quote(secret, safe=""),
        "base64": base64.b64encode(secret.encode()).decode().rstrip("="),
        "hex": secret.encode().hex(),
    }
    return [name for name, form in forms.items() if form in text]


async def test_secrets_never_in_logs_error_bodies_or_metrics(
    secure_kafka: SecureKafka,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")  # the consumer's log level: the most verbose
    token = uuid.uuid4().hex
    secrets = {
        "signature": f"sig-current-{token}",
        "signature_old": f"sig-rotated-{token}",
        "sasl_password": USERS["alice"],
        "sink_signing": f"sink-sign-{token}",
        "sink_auth": f"Bearer sink-auth-{token}",
    }
    raw = await secure_kafka.topic("sec.raw", partitions=2)
    dlq = await secure_kafka.topic("sec.dlq")
    target = TargetServer(status=503).start()
    kafka = secure_kafka.settings(sasl_password=secrets["sasl_password"])
    config = tmp_path / "secure.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": kafka,
                "gateway": {"log_level": "DEBUG", "log_format": "json"},
                "sources": [
                    {
                        "name": "crystallize",
                        "path": PATH,
                        "verifier": {"type": "crystallize", "mode": "auto"},
                        "secrets": [secrets["signature"], secrets["signature_old"]],
                        "topic": raw,
                        "body_limit": 2048,
                    }
                ],
                "consumers": {
                    "group": f"sec-{token[:8]}",
                    "topics": [raw],
                    "dlq_topic": dlq,
                    "sinks": {
                        "hook": {
                            "type": "http",
                            "url": target.url,
                            "headers": {"Authorization": secrets["sink_auth"]},
                            "sign": {"scheme": "hmac-sha256", "secret": secrets["sink_signing"]},
                        }
                    },
                    "routes": [{"name": "all", "sinks": ["hook"]}],
                    "retry": {"initial_ms": 50, "max_ms": 200, "max_attempts": 3},
                    "commit_interval_ms": 200,
                },
            }
        )
    )
    gateway = GatewayProcess(config)
    consumer_log = tmp_path / "consumer.log"
    consumer = ConsumerProcess(config, consumer_log)
    bodies: list[str] = []
    try:
        consumer.start()
        await gateway.wait_healthy()
        await consumer.wait_ready()
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as c:
            accepted = []
            for n in range(10):
                body = f'{{"order": {{"get": {{"id": "o-{n}"}}}}, "n": {n}}}'.encode()
                key = secrets["signature"] if n % 2 else secrets["signature_old"]
                r = await c.post(
                    PATH, content=body, headers={"x-crystallize-signature": sign_hmac(key, body)}
                )
                assert r.status_code == 202, r.text
                accepted.append(r.json()["id"])
            refused = [
                await c.post(PATH, content=b'{"a": 1}'),
                await c.post(PATH, content=b"{}", headers={"x-crystallize-signature": "0" * 64}),
                await c.post(
                    PATH,
                    content=b"{}",
                    headers={"x-crystallize-signature": sign_hmac(secrets["signature"], b"{ }")},
                ),
                await c.post(PATH, content=b"x" * 5000),
                await c.post(
                    PATH,
                    content=b"not json",
                    headers={
                        "x-crystallize-signature": sign_hmac(secrets["signature"], b"not json")
                    },
                ),
                await c.request("TRACE", PATH),
                await c.get("/nowhere"),
                await c.get("/metrics"),
                await c.get("/healthz"),
            ]
            assert [r.status_code for r in refused] == [401, 401, 401, 413, 400, 405, 404, 404, 404]
            bodies += [r.text + str(r.headers) for r in refused]
            assert (await c.get("/openapi.json")).status_code == 404  # on the admin port
            document = await c.get(gateway.admin_url + "/openapi.json")
            assert document.status_code == 200
            bodies.append(document.text)

        # The sink fails (retries, then the DLQ), then recovers for later events.
        await wait_until(lambda: target.requests >= 10, 60, "the failing sink to be tried")
        target.status = 200
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as c:
            body = b'{"order": {"get": {"id": "late"}}}'
            r = await c.post(
                PATH,
                content=body,
                headers={"x-crystallize-signature": sign_hmac(secrets["signature"], body)},
            )
            assert r.status_code == 202
        await wait_until(lambda: len(target.received) >= 1, 60, "a delivery after recovery")

        async with httpx.AsyncClient(timeout=10) as c:
            gateway_metrics = (await c.get(gateway.admin_url + "/metrics")).text
            consumer_metrics = (await c.get(consumer.url + "/metrics")).text
        assert "webhookgw_ingress_requests_total" in gateway_metrics  # the admin port serves them
        assert "webhookgw_ingress_verification_failures_total" in gateway_metrics
        assert consumer_metrics.strip()

        gateway.terminate()
        assert await gateway.wait_exit() == 0
        assert consumer.terminate() == 0
    finally:
        gateway.stop()
        consumer.stop_quietly()
        target.stop()

    logs = {"gateway log": gateway.log(), "consumer log": consumer_log.read_text(errors="replace")}
    # The run logged enough to have something to leak: startup, failures, DEBUG lines.
    assert "gateway listening" in logs["gateway log"]
    assert "DEBUG" in logs["consumer log"]
    places = {**logs, "error bodies": "\n".join(bodies), "gateway /metrics": gateway_metrics}
    places["consumer /metrics"] = consumer_metrics
    found = {
        (name, where, form)
        for name, secret in secrets.items()
        for where, text in places.items()
        for form in leaks(secret, text)
    }
    assert found == set(), f"secrets leaked: {sorted(found)}"
    # The sink really was sent the signed, authorized requests (the secrets were in use).
    assert target.received
