"""A private Kafka with a SASL_SSL listener, as managed clusters present one: a
certificate made with openssl for 127.0.0.1, SCRAM and PLAIN users, Kafka's unsecured
OAUTHBEARER tokens. The session fixture ``secure_kafka`` (tests/integration/conftest.py)
starts one for every test that needs it."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from faults.procs import LocalService, free_port
from faults.scenarios import kafka_port_pair

TLS_PASSWORD = "keystore-" + secrets.token_hex(6)
USERS = {"alice": "alice-" + secrets.token_hex(8), "bob": "bob-" + secrets.token_hex(8)}


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, and the broker's key and certificate for 127.0.0.1 / localhost in a PKCS12
    keystore (legacy algorithms: every JDK 17 reads them)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=webhook-gateway test CA")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
             "-out", "broker.csr", "-subj", "/CN=localhost")  # fmt: skip
    _openssl(directory, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey",
             "ca.key", "-CAcreateserial", "-out", "broker.pem", "-days", "2",
             "-extfile", "san.cnf")  # fmt: skip
    _openssl(directory, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
             "-certfile", "ca.pem", "-out", "broker.p12", "-passout", f"pass:{TLS_PASSWORD}",
             "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES",
             "-macalg", "sha1")  # fmt: skip
    return directory / "ca.pem", directory / "broker.p12"


@dataclass
class SecureKafka:
    service: LocalService
    sasl_port: int
    ca: Path

    @property
    def plaintext(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def settings(self, mechanism: str = "SCRAM-SHA-512", **overrides: Any) -> dict[str, Any]:
        kafka: dict[str, Any] = {
            "bootstrap_servers": f"127.0.0.1:{self.sasl_port}",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "ssl_cafile": str(self.ca),
        }
        if mechanism != "OAUTHBEARER":
            kafka |= {"sasl_username": "alice", "sasl_password": USERS["alice"]}
        kafka.update(overrides)
        return {k: v for k, v in kafka.items() if v is not None}

    async def topic(self, prefix: str, partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.plaintext)
        await admin.start()
        try:
            big = {"max.message.bytes": str(1024 * 1024 + 64 * 1024)}
            await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=big)])
        finally:
            await admin.close()
        return name


def secure_service(state: Path) -> tuple[LocalService, int, Path]:
    """The broker (not started), its SASL_SSL port and the CA that signed it."""
    ca, keystore = make_certificates(state / "tls")
    sasl_port = free_port()
    kafka = LocalService(
        "kafka",
        kafka_port_pair(29000, 31000),
        state / "broker",
        env={
            "KAFKA_SASL_SSL_PORT": str(sasl_port),
            "KAFKA_TLS_KEYSTORE": str(keystore),
            "KAFKA_TLS_PASSWORD": TLS_PASSWORD,
            "KAFKA_SASL_USERS": ",".join(f"{u}:{p}" for u, p in USERS.items()),
        },
    )
    return kafka, sasl_port, ca
