"""Test helpers for the ingress: a small HMAC verifier, a fake producer, builders."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, SecretStr

from gateway import config as gwconfig
from gateway.app import GatewayApp, Ingress, IngressState, create_app
from gateway.metrics import IngressMetrics
from gateway.producer import Headers, ProduceError
from gateway.sources import Source, build_sources
from gateway.verifiers import VerificationError, Verified, WebhookRequest
from gateway.verifiers.registry import VerifierRegistry
from webhook_common.config import StrictModel
from webhook_common.tracing import Tracing

SIG_HEADER = "x-test-signature"


class BodyHmacConfig(StrictModel):
    header: str = SIG_HEADER
    delivery_header: str | None = None


class BodyHmacVerifier:
    """Hex HMAC-SHA256 of the raw body in ``x-test-signature``; records what it saw."""

    Config: ClassVar[type[BaseModel]] = BodyHmacConfig
    seen: ClassVar[list[WebhookRequest]] = []

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        assert isinstance(config, BodyHmacConfig)
        if not secrets:
            raise ValueError("at least one secret")
        self.config = config
        self.keys = [s.get_secret_value().encode() for s in secrets]

    def verify(self, request: WebhookRequest) -> Verified:
        BodyHmacVerifier.seen.append(request)
        given = request.headers.get(self.config.header)
        if given is None:
            raise VerificationError("missing", "no signature header")
        for index, key in enumerate(self.keys):
            expected = hmac.new(key, request.body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, given):
                delivery = (
                    request.headers.get(self.config.delivery_header)
                    if self.config.delivery_header
                    else None
                )
                return Verified(secret_index=index, event_id=delivery)
        raise VerificationError("mismatch", "signature does not match")


class ExplodingVerifier:
    """A buggy verifier: raises something other than VerificationError."""

    Config: ClassVar[type[BaseModel]] = StrictModel

    def __init__(self, config: BaseModel, secrets: Sequence[SecretStr]) -> None:
        pass

    def verify(self, request: WebhookRequest) -> Verified:
        raise RuntimeError("bug in verifier")


TEST_VERIFIERS: Mapping[str, type[Any]] = {
    "body-hmac": BodyHmacVerifier,
    "exploding": ExplodingVerifier,
}


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class SentRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers

    def header(self, name: str) -> str:
        values = [v for k, v in self.headers if k == name]
        assert len(values) == 1, (name, self.headers)
        return values[0].decode()


@dataclass
class FakeProducer:
    """Records sends; ``fail`` makes send raise; ``gate`` blocks sends until set."""

    records: list[SentRecord] = field(default_factory=list)
    fail: ProduceError | None = None
    gate: asyncio.Event | None = None
    ready: str | None = None
    deadlines: list[float] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # topics Kafka says it does not have

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers, deadline: float
    ) -> None:
        self.deadlines.append(deadline)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.records.append(SentRecord(topic, key, value, headers))

    async def readiness(self) -> str | None:
        return self.ready

    def topic_known(self, topic: str) -> bool:
        return topic not in self.unknown


def config(
    sources: list[dict[str, Any]], gateway: dict[str, Any] | None = None
) -> gwconfig.GatewayConfig:
    return gwconfig.parse_config({"sources": sources, "gateway": gateway or {}})


def build(
    sources: list[dict[str, Any]],
    gateway: dict[str, Any] | None = None,
    producer: FakeProducer | None = None,
    tracer: Tracing | None = None,
) -> tuple[GatewayApp, Ingress, FakeProducer, CollectorRegistry]:
    cfg = config(sources, gateway)
    built: list[Source] = build_sources(cfg, VerifierRegistry(TEST_VERIFIERS))
    producer = producer or FakeProducer()
    registry = CollectorRegistry()
    ingress = Ingress(
        built, producer, IngressMetrics(registry), cfg.gateway, IngressState(), tracer=tracer
    )
    return create_app(ingress), ingress, producer, registry


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- running `python -m gateway serve` as a user would ------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_argv(config: Path, port: int, admin_port: int, *extra: str) -> list[str]:
    """The command line of ``python -m gateway serve`` on loopback, as a user types it."""
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        *extra,
    ]


class GatewayProcess:
    """``python -m gateway serve`` on free loopback ports; always stopped by the caller."""

    def __init__(
        self,
        config_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        admin_host: str = "127.0.0.1",
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.admin_host = admin_host
        self.log_path = config_path.with_suffix(".log")
        self._log = self.log_path.open("wb")
        extra = ["--admin-host", admin_host] if admin_host != "127.0.0.1" else []
        self.proc = subprocess.Popen(
            serve_argv(config_path, self.port, self.admin_port, *extra),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_healthy(self, within: float = 30.0) -> None:
        async with httpx.AsyncClient() as c, asyncio.timeout(within):
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited early:\n{self.log()}")
                try:
                    if (await c.get(self.admin_url + "/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, within: float = 60.0) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), within)

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


async def read_topic(bootstrap: str, topic: str, expected: int, within: float = 20.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, waiting until ``expected`` arrived
    (then a short quiet period, so extra records would be seen too)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(within):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
        batch = await consumer.getmany(timeout_ms=500)
        for part in batch.values():
            records.extend(part)
    finally:
        await consumer.stop()
    return records
