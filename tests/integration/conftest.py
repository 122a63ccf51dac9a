"""Helpers for tests on the real broker: unique topics per test, created and deleted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.secure_kafka import SecureKafka, secure_service

TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def kafka_topic(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    """``await kafka_topic(partitions=3)`` creates a fresh topic, deleted after the test;
    ``config`` sets topic configs (``{"max.message.bytes": "..."}``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(
        prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None
    ) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        created.append(name)
        return name

    try:
        yield create
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


@pytest.fixture(scope="session")
def secure_kafka(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureKafka]:
    """A private broker with a SASL_SSL listener (tests/integration/secure_kafka.py).
    ``kafka_bootstrap`` marks the tests and, under CI, fails them when Kafka cannot run,
    as for every Kafka test."""
    service, sasl_port, ca = secure_service(tmp_path_factory.mktemp("secure-kafka"))
    try:
        asyncio.run(service.up())
        yield SecureKafka(service, sasl_port, ca)
    finally:
        asyncio.run(service.down())
