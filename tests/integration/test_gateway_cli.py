"""`python -m gateway topics create` against the real broker."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.cli import run_module


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("gateway", *args)


async def test_topics_create_is_idempotent(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:10]
    raw, dlq, extra = f"cli-raw.{suffix}", f"cli-dlq.{suffix}", f"cli-extra.{suffix}"
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "topics": [
                    {"name": raw, "partitions": 3, "replication_factor": 1},
                    {"name": dlq, "partitions": 2},
                ],
                "sources": [
                    {"name": "a", "verifier": {"type": "none", "insecure": True}, "topic": raw},
                    # Not in `topics:`: created with defaults.
                    {"name": "b", "verifier": {"type": "none", "insecure": True}, "topic": extra},
                ],
            }
        )
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        first = run("topics", "create", "--config", str(path))
        assert first.returncode == 0, first.stderr
        assert f"created  {raw} (3 partitions, replication factor 1)" in first.stdout
        assert f"created  {dlq} (2 partitions" in first.stdout
        assert f"created  {extra} (6 partitions" in first.stdout
        second = run("topics", "create", "--config", str(path))
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("exists") == 3
        assert "created" not in second.stdout

        described = {t["topic"]: t for t in await admin.describe_topics([raw, dlq, extra])}
        assert len(described[raw]["partitions"]) == 3
        assert len(described[dlq]["partitions"]) == 2
        assert len(described[extra]["partitions"]) == 6
        # Every topic it creates accepts a record with a body at the limit plus headers:
        # the source topics, and the others it lists (the dead-letter topic holds copies
        # of raw records).
        configs = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
                for name in (raw, dlq, extra)
            ]
        )
        limits = {
            resource[3]: int(dict((e[0], e[1]) for e in resource[4])["max.message.bytes"])
            for response in configs
            for resource in response.resources
        }
        assert limits == dict.fromkeys((raw, dlq, extra), 1024 * 1024 + 64 * 1024)
    finally:
        await admin.delete_topics([raw, dlq, extra])
        await admin.close()


def test_topics_create_unreachable_kafka(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": f"127.0.0.1:{dead}"},
                "sources": [{"name": "a", "verifier": {"type": "none", "insecure": True}}],
            }
        )
    )
    result = run("topics", "create", "--config", str(path))
    assert result.returncode == 1
    assert f"error: cannot connect to Kafka at '127.0.0.1:{dead}'" in result.stderr
    assert "Traceback" not in result.stderr
