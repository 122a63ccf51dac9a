"""Reading topics' max.message.bytes, with a fake admin client: what is found, what is
missing, what may not be read (one warning, never an exception)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from webhook_common.config import KafkaSettings
from webhook_common.topicsizes import (
    Shortfall,
    TopicLimits,
    describe_max_message_bytes,
    fetch_max_message_bytes,
    shortfalls,
)

TOPIC_AUTHORIZATION_FAILED = 29


@dataclass
class Response:
    resources: list[tuple[Any, ...]]


def found(topic: str, value: str) -> tuple[Any, ...]:
    # DescribeConfigs v1+: (error, message, type, name, [(name, value, read_only,
    # source, sensitive, synonyms)])
    return (0, "", 2, topic, [("max.message.bytes", value, False, 1, False, [])])


def failed(topic: str, code: int, message: str = "") -> tuple[Any, ...]:
    return (code, message, 2, topic, [])


@dataclass
class FakeAdmin:
    """Answers DescribeConfigs from ``answers``; ``error`` is raised instead when set."""

    answers: list[tuple[Any, ...]] = field(default_factory=list)
    error: Exception | None = None
    start_error: Exception | None = None
    hang: bool = False
    asked: list[list[str]] = field(default_factory=list)
    closed: bool = False

    async def start(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.start_error is not None:
            raise self.start_error

    async def close(self) -> None:
        self.closed = True

    async def describe_configs(
        self, config_resources: list[ConfigResource], include_synonyms: bool = False
    ) -> list[Any]:
        self.asked.append([r.name for r in config_resources])
        if self.error is not None:
            raise self.error
        return [Response(self.answers)]


async def test_effective_limits_are_read_and_a_missing_topic_is_none() -> None:
    admin = FakeAdmin([found("raw", "1114112"), failed("gone", 3, "does not exist")])
    limits = await describe_max_message_bytes(admin, ["raw", "gone", "raw"])
    assert admin.asked == [["raw", "gone"]]  # one request, each topic once
    assert limits.limits == {"raw": 1114112, "gone": None}
    assert limits.unchecked == {}  # a missing topic is not "not checked"


async def test_a_denied_describe_leaves_the_topic_unchecked() -> None:
    admin = FakeAdmin(
        [found("raw", "1114112"), failed("dlq", TOPIC_AUTHORIZATION_FAILED, "denied")]
    )
    limits = await describe_max_message_bytes(admin, ["raw", "dlq"])
    assert limits.limits == {"raw": 1114112, "dlq": None}
    assert limits.unchecked == {"dlq": "TopicAuthorizationFailedError: denied"}


async def test_a_failed_request_leaves_every_topic_unchecked() -> None:
    admin = FakeAdmin(error=KafkaTimeoutError())
    limits = await describe_max_message_bytes(admin, ["a", "b"])
    assert limits.limits == {"a": None, "b": None}
    assert set(limits.unchecked) == {"a", "b"}
    assert "KafkaTimeoutError" in limits.unchecked["a"]


async def test_a_topic_the_broker_does_not_answer_for_is_unchecked() -> None:
    limits = await describe_max_message_bytes(FakeAdmin([found("a", "10")]), ["a", "b"])
    assert limits.limits == {"a": 10, "b": None}
    assert limits.unchecked == {"b": "the broker did not answer for it"}


async def test_nothing_to_ask_sends_nothing() -> None:
    admin = FakeAdmin()
    assert (await describe_max_message_bytes(admin, [])).limits == {}
    assert admin.asked == []


def test_shortfalls_are_the_known_limits_below_their_need() -> None:
    limits = TopicLimits({"small": 1048588, "exact": 1114112, "missing": None})
    needed = {"small": 1114112, "exact": 1114112, "missing": 1114112, "unasked": 5}
    assert shortfalls(limits, needed) == [Shortfall("small", 1048588, 1114112)]


def test_the_message_names_topic_limit_need_effect_and_fix() -> None:
    message = Shortfall("webhooks.dlq", 1048588, 1114112).message(
        "kafka:9092", "records will be refused", "lower the limit"
    )
    assert message == (
        "topic 'webhooks.dlq' has max.message.bytes 1048588, below the 1114112 needed: "
        "records will be refused; raise it with `kafka-configs.sh --bootstrap-server "
        "kafka:9092 --alter --entity-type topics --entity-name webhooks.dlq --add-config "
        "max.message.bytes=1114112`, or lower the limit"
    )


def factory(admin: FakeAdmin) -> Any:
    def make(**kwargs: Any) -> FakeAdmin:
        assert kwargs["bootstrap_servers"] == "kafka:9092"
        return admin

    return make


KAFKA = KafkaSettings(bootstrap_servers="kafka:9092", request_timeout_ms=1000)


async def test_fetch_warns_once_when_describe_is_denied(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin(
        [failed("a", TOPIC_AUTHORIZATION_FAILED), failed("b", TOPIC_AUTHORIZATION_FAILED)]
    )
    with caplog.at_level(logging.WARNING, "webhook_common.topicsizes"):
        limits = await fetch_max_message_bytes(KAFKA, ["a", "b"], admin_factory=factory(admin))
    assert limits.limits == {"a": None, "b": None}
    assert admin.closed
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert text.startswith("topic size check skipped, cannot read max.message.bytes (a, b: ")
    assert "TopicAuthorizationFailedError" in text
    assert "grant DescribeConfigs on them" in text


async def test_fetch_is_silent_when_everything_was_read(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin([found("a", "2000000")])
    with caplog.at_level(logging.DEBUG, "webhook_common.topicsizes"):
        limits = await fetch_max_message_bytes(KAFKA, ["a"], admin_factory=factory(admin))
    assert limits.limits == {"a": 2000000}
    assert caplog.records == []


async def test_fetch_never_raises_when_kafka_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = FakeAdmin(start_error=KafkaConnectionError("Unable to bootstrap"))
    with caplog.at_level(logging.WARNING, "webhook_common.topicsizes"):
        limits = await fetch_max_message_bytes(KAFKA, ["a"], admin_factory=factory(admin))
    assert limits.unchecked == {"a": "KafkaConnectionError: Unable to bootstrap"}
    assert admin.closed
    (record,) = caplog.records
    assert "KafkaConnectionError" in record.getMessage()
    assert "DescribeConfigs" not in record.getMessage()  # not a permission problem


async def test_fetch_gives_up_after_the_request_timeout(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin(hang=True)
    with caplog.at_level(logging.WARNING, "webhook_common.topicsizes"):
        limits = await asyncio.wait_for(
            fetch_max_message_bytes(KAFKA, ["a"], admin_factory=factory(admin)), 10
        )
    assert limits.unchecked == {"a": "TimeoutError"}
    assert admin.closed
    assert len(caplog.records) == 1
