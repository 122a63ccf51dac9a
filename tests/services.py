"""Finding the real services integration tests talk to.

Order, for each service: the environment (``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``,
``DATABASE_URL``), then a Docker engine through testcontainers when one answers, then
the project's own local processes (``deploy/local/*.sh up``). Under ``CI=true`` a
service that cannot be had fails the test; elsewhere the test is skipped with the
reason, so a laptop without Java can still run the unit tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "deploy" / "local"

KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6399"))
PG_PORT = int(os.environ.get("PG_PORT", "5439"))


class ServiceUnavailable(Exception):
    pass


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, why: str) -> None:
    """Fail under CI, skip elsewhere: a service test must never pass unnoticed."""
    msg = f"{what} unavailable: {why}"
    if in_ci():
        pytest.fail(msg + " (CI=true: service tests fail rather than skip)", pytrace=False)
    pytest.skip(msg)


def docker_engine() -> bool:
    """True when a Docker engine (not just the client) answers."""
    if os.environ.get("WG_NO_DOCKER") or not shutil.which("docker"):
        return False
    try:
        res = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and bool(res.stdout.strip())


def local_up(script: str) -> None:
    res = subprocess.run(
        [str(LOCAL / script), "up"], capture_output=True, text=True, timeout=600, check=False
    )
    if res.returncode != 0:
        raise ServiceUnavailable(f"deploy/local/{script} up failed: {res.stderr.strip()[-800:]}")


@contextlib.contextmanager
def _container(factory: Callable[[], Any]) -> Iterator[Any]:
    container = factory()
    container.start()
    try:
        yield container
    finally:
        container.stop()


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    if url := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield url
        return
    if docker_engine():
        from testcontainers.kafka import KafkaContainer

        with _container(lambda: KafkaContainer().with_kraft()) as c:
            yield str(c.get_bootstrap_server())
        return
    local_up("kafka.sh")
    yield f"127.0.0.1:{KAFKA_PORT}"


@contextlib.contextmanager
def redis() -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if docker_engine():
        from testcontainers.redis import RedisContainer

        with _container(RedisContainer) as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    local_up("redis.sh")
    yield f"redis://127.0.0.1:{REDIS_PORT}/0"


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if docker_engine():
        from testcontainers.postgres import PostgresContainer

        with _container(lambda: PostgresContainer("postgres:16-alpine", driver=None)) as c:
            yield str(c.get_connection_url())
        return
    local_up("postgres.sh")
    yield f"postgresql://webhooks@127.0.0.1:{PG_PORT}/webhooks"
