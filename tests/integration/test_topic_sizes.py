"""Topic sizes against the real broker: a topic made with a small ``max.message.bytes``
is found by the describe helper, by ``gateway serve`` (warn and fail), by ``gateway
topics create`` and by ``consumers run``. Every topic made here is deleted afterwards."""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient

from faults.procs import Gateway
from tests.cli import run_module
from tests.consumers.harness import ConsumerProcess, consumers_running, write_config
from tests.integration.conftest import TopicFactory
from webhook_common.config import KafkaSettings
from webhook_common.topicsizes import fetch_max_message_bytes

SMALL = 500_000
NEEDED = 1024 * 1024 + 64 * 1024  # the default body_limit plus the header allowance
BROKER_DEFAULT = 1048588  # message.max.bytes of a broker left at its defaults


def gateway_config(
    path: Path, bootstrap: str, topic: str, mode: str = "warn", **extra: Any
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": bootstrap},
                "gateway": {"check_topic_sizes": mode, "log_format": "text"},
                "sources": [
                    {"name": "a", "verifier": {"type": "none", "insecure": True}, "topic": topic}
                ],
                **extra,
            }
        )
    )
    return path


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("gateway", *args)


async def test_the_helper_reads_effective_limits_and_none_for_a_missing_topic(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    small = await kafka_topic("size-small", config={"max.message.bytes": str(SMALL)})
    default = await kafka_topic("size-default")
    missing = f"size-missing.{uuid.uuid4().hex[:12]}"
    limits = await fetch_max_message_bytes(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), [small, default, missing]
    )
    assert limits.limits == {small: SMALL, default: BROKER_DEFAULT, missing: None}
    assert limits.unchecked == {}


async def test_serve_logs_an_error_for_a_small_source_topic_and_serves(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topic("size-serve", config={"max.message.bytes": str(SMALL)})
    config = gateway_config(tmp_path / "gw.yaml", kafka_bootstrap, topic)
    gateway = Gateway(config, tmp_path / "gateway.log").start()
    try:
        await gateway.wait_ready()
    finally:
        assert await gateway.stop() == 0, gateway.tail()
    errors = [line for line in gateway.tail(20_000).splitlines() if " ERROR " in line]
    assert len(errors) == 1, gateway.tail()
    assert (
        f"topic '{topic}' has max.message.bytes {SMALL}, below the {NEEDED} needed: "
        f"webhooks of source 'a' whose record (body plus headers) exceeds {SMALL} bytes "
        "will be refused by the broker and answered 503; raise it with `kafka-configs.sh "
        f"--bootstrap-server {kafka_bootstrap} --alter --entity-type topics --entity-name "
        f"{topic} --add-config max.message.bytes={NEEDED}`, or lower sources[0].body_limit "
        f"to at most {SMALL - 65536}"
    ) in errors[0]


async def test_serve_with_fail_refuses_to_start_before_listening(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topic("size-fail", config={"max.message.bytes": str(SMALL)})
    config = gateway_config(tmp_path / "gw.yaml", kafka_bootstrap, topic, mode="fail")
    # The webhook port is taken: getting past the check would end in another error.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = gateway_cli(
            "serve", "--config", str(config), "--host", "127.0.0.1", "--port", port
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("error: ") == 1
    assert "error: gateway.check_topic_sizes is 'fail' and a source topic is too small" in (
        result.stderr
    )
    assert f"topic '{topic}' has max.message.bytes {SMALL}, below the {NEEDED}" in result.stderr
    assert "cannot listen" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_topics_create_reports_a_small_existing_topic_and_exits_1(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    small = await kafka_topic("size-dlq")  # at the broker default, as on the dev broker
    fits = await kafka_topic("size-raw", config={"max.message.bytes": str(NEEDED)})
    new = f"size-new.{uuid.uuid4().hex[:12]}"
    config = gateway_config(
        tmp_path / "gw.yaml",
        kafka_bootstrap,
        fits,
        topics=[{"name": small}, {"name": new}],
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        result = gateway_cli("topics", "create", "--config", str(config))
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            f"exists   {small} (max.message.bytes {BROKER_DEFAULT} < {NEEDED} needed: raise "
            f"it with `kafka-configs.sh --bootstrap-server {kafka_bootstrap} --alter "
            f"--entity-type topics --entity-name {small} --add-config "
            f"max.message.bytes={NEEDED}`)",
            f"created  {new} (6 partitions, replication factor 1)",
            f"exists   {fits} (left unchanged)",
        ]
        limits = await fetch_max_message_bytes(
            KafkaSettings(bootstrap_servers=kafka_bootstrap), [small]
        )
        assert limits.limits == {small: BROKER_DEFAULT}  # reported, never altered
    finally:
        if new in await admin.list_topics():
            await admin.delete_topics([new])
        await admin.close()


async def test_consumers_run_warns_about_a_small_dlq_and_kafka_sink_topic(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("size-craw")
    dlq = await kafka_topic("size-cdlq")  # at the broker default: below max_record_bytes
    out = await kafka_topic("size-cout", config={"max.message.bytes": str(SMALL)})
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {"bus": {"type": "kafka", "topic": out}},
        },
    )
    proc = ConsumerProcess(config, tmp_path / "consumer.log").start()
    with consumers_running(proc):
        await proc.wait_ready()
        assert proc.terminate() == 0, proc.logs()
    warnings = [line for line in proc.tail(20_000).splitlines() if " WARNING " in line]
    dlq_line = next((w for w in warnings if f"topic '{dlq}'" in w), None)
    assert dlq_line is not None, proc.logs()
    assert (
        f"topic '{dlq}' has max.message.bytes {BROKER_DEFAULT}, below the {NEEDED} needed: "
        f"dead letters above {BROKER_DEFAULT} bytes will be written as `too_large` references"
    ) in dlq_line
    assert f"--entity-name {dlq} --add-config max.message.bytes={NEEDED}`" in dlq_line
    out_line = next((w for w in warnings if f"topic '{out}'" in w), None)
    assert out_line is not None, proc.logs()
    assert (
        f"events above {SMALL} bytes that sink 'bus' republishes will be refused by the "
        "broker and dead-lettered"
    ) in out_line
