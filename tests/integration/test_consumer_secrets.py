"""No configured secret leaves a consumer process: not in a log line, an error, a
dead-letter record or a metric.

Every consumer-side component gets a secret (the Kafka SASL password, the Redis URL's
password, the PostgreSQL DSN's password, the HTTP sink's signing secret and its static
``Authorization`` header, a plugin sink's API key), and then the paths that write what
went wrong are driven for real: the HTTP sink's header value cannot be sent, and the
plugin — third-party code, as careless as such code can be — logs its key at start and
quotes it in the error of every failed delivery, which ends in the dead-letter topic.
The process must blank every configured secret out of all of it, whoever wrote it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from consumers.sinks import ENTRY_POINT_GROUP
from tests.consumers.harness import (
    ROOT,
    ConsumerProcess,
    TargetServer,
    consumers_running,
    meta,
    produce,
    read_topic,
    wait_until,
)
from tests.integration.secure_kafka import USERS, SecureKafka
from tests.plugin_dist import write_dist_info

SASL_PASSWORD = USERS["alice"]  # checked by the broker (SCRAM over TLS)
PLUGIN_KEY = "plugin-key-" + uuid.uuid4().hex
LEAKY_SINK = """
import logging
from typing import ClassVar
from pydantic import BaseModel, SecretStr
from consumers.sinks import SinkError

log = logging.getLogger("leaky_sink")


class LeakyConfig(BaseModel):
    api_key: SecretStr


class LeakySink:
    Config: ClassVar[type[BaseModel]] = LeakyConfig

    def __init__(self, name, config, context):
        self.name = name
        self._key = config.api_key.get_secret_value()

    async def start(self):
        log.warning("connecting with api key %s", self._key)

    async def send(self, event):
        raise SinkError(f"the target refused api key {self._key}", retriable=False)

    async def aclose(self):
        pass
"""
SIGNING_SECRET = "sign-secret-" + uuid.uuid4().hex
HEADER_TOKEN = "hdr-token-" + uuid.uuid4().hex


def _with_password(url: str, user: str) -> tuple[str, str]:
    """``url`` with a password in its userinfo, and that password. A server that needs
    none (trust auth, Redis ``nopass``) accepts any; one that does keeps its own."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = "url-pw-" + uuid.uuid4().hex
    host = parts.hostname or "127.0.0.1"
    netloc = f"{parts.username or user}:{password}@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc)), password


async def test_no_configured_secret_appears_in_logs_errors_dead_letters_or_metrics(
    secure_kafka: SecureKafka,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    raw = await secure_kafka.topic("raw")
    dlq = await secure_kafka.topic("dlq")
    redis, redis_password = _with_password(redis_url, "default")
    dsn, pg_password = _with_password(database_url, "webhooks")
    secrets = [SASL_PASSWORD, SIGNING_SECRET, HEADER_TOKEN, PLUGIN_KEY, redis_password, pg_password]
    site = tmp_path / "site"
    site.mkdir()
    (site / "leaky_sink.py").write_text(LEAKY_SINK)
    write_dist_info(
        site, "leaky-sink", "1.0", {ENTRY_POINT_GROUP: {"leaky": "leaky_sink:LeakySink"}}
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    target = TargetServer(status=422).start()  # refuses every delivery for good
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": secure_kafka.settings(sasl_password=SASL_PASSWORD),
                "consumers": {
                    "group": f"g-{uuid.uuid4().hex[:8]}",
                    "topics": [raw],
                    "dlq_topic": dlq,
                    "dedup": {"store": "redis", "redis_url": redis},
                    "sinks": {
                        "hook": {
                            "type": "http",
                            "url": target.url,
                            "sign": {"scheme": "hmac-sha256", "secret": SIGNING_SECRET},
                            "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"},
                        },
                        "vendor": {"type": "leaky", "api_key": PLUGIN_KEY},
                        "db": {
                            "type": "postgres",
                            "dsn": dsn,
                            "table": f"t_{uuid.uuid4().hex[:8]}",
                        },
                    },
                    "routes": [{"name": "all", "sinks": ["hook", "vendor", "db"]}],
                    # Few, quick attempts: the test is about what failures write.
                    "retry": {"max_attempts": 3, "initial_ms": 50, "max_ms": 200},
                },
            }
        )
    )
    await produce(
        secure_kafka.plaintext, raw, [(meta(f"e{i}", f"k{i}"), b'{"n": 1}') for i in range(3)]
    )

    proc = ConsumerProcess(config, tmp_path / "consumer.log", env=env).start()
    try:
        with consumers_running(proc):
            await proc.wait_ready()
            await wait_until(
                lambda: proc.metric("webhookgw_consumer_dead_lettered_total"),
                60,
                "a dead-lettered delivery",
            )
            dead = await read_topic(secure_kafka.plaintext, dlq, 6, within=60)
            async with httpx.AsyncClient(timeout=5) as client:
                metrics = (await client.get(proc.url + "/metrics")).text
            assert proc.terminate() == 0, proc.logs()
    finally:
        target.stop()

    logs = (tmp_path / "consumer.log").read_text()
    dead_text = repr([(r.key, r.value, r.headers) for r in dead])
    # The failure path really ran and wrote about it...
    assert len(dead) >= 6  # 3 events, 2 failing sinks
    assert "connecting with api key" in logs
    assert "the target refused api key" in dead_text, dead_text
    # ...and no secret is anywhere in what it wrote.
    for secret in secrets:
        assert secret not in logs, f"a secret in the consumer's log:\n{logs[-3000:]}"
        assert secret not in dead_text, f"a secret in a dead-letter record: {dead_text[:3000]}"
        assert secret not in metrics
