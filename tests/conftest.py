"""Session-scoped real services, and markers applied by the fixtures a test uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack

import pytest

from tests import services

# A test that uses one of these fixtures gets the marker, so `-m "not kafka"` works.
_MARKS = {"kafka_bootstrap": "kafka", "redis_url": "redis", "database_url": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, mark in _MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, mark))


def _serve(name: str, cm: AbstractContextManager[str]) -> Iterator[str]:
    with ExitStack() as stack:
        try:
            url = stack.enter_context(cm)
        except Exception as exc:  # any failure to start means "unavailable"
            services.unavailable(name, f"{type(exc).__name__}: {exc}")
            raise  # unreachable: unavailable() fails or skips
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    yield from _serve("Kafka", services.kafka())


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from _serve("Redis", services.redis())


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    yield from _serve("PostgreSQL", services.postgres())
