"""Whether the source topics take what the sources send (``serve`` start-up) and how
``topics create`` reports an existing topic that is too small; Kafka is a fake here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.config import GatewayConfig, TopicSpec, parse_config
from gateway.topics import (
    TopicOutcome,
    check_topic_sizes,
    exit_status_for,
    needed_bytes,
    source_topic_problems,
)
from webhook_common.config import KafkaSettings
from webhook_common.errors import ConfigError, StartupError
from webhook_common.topicsizes import TopicLimits

MiB = 1024 * 1024
DEFAULT_RECORD = MiB + 64 * 1024  # the default body_limit plus the header allowance


def cfg(*sources: dict[str, Any], mode: str = "warn") -> GatewayConfig:
    return parse_config(
        {
            "kafka": {"bootstrap_servers": "kafka:9092"},
            "gateway": {"check_topic_sizes": mode},
            "sources": [{"verifier": {"type": "none"}, **s} for s in sources],
        }
    )


class Describe:
    """Answers like :func:`fetch_max_message_bytes` from a fixed table."""

    def __init__(self, limits: dict[str, int | None], unchecked: dict[str, str] | None = None):
        self.result = TopicLimits(limits, unchecked or {})
        self.asked: list[list[str]] = []

    async def __call__(self, kafka: KafkaSettings, topics: Sequence[str]) -> TopicLimits:
        assert kafka.bootstrap_servers == "kafka:9092"
        self.asked.append(list(topics))
        return self.result


def test_a_topic_below_a_source_is_named_with_limit_need_and_both_fixes() -> None:
    config = cfg({"name": "shop", "topic": "raw"})
    (problem,) = source_topic_problems(config, TopicLimits({"raw": 1048588}))
    assert problem == (
        "topic 'raw' has max.message.bytes 1048588, below the 1114112 needed: webhooks of "
        "source 'shop' whose record (body plus headers) exceeds 1048588 bytes will be "
        "refused by the broker and answered 503; raise it with `kafka-configs.sh "
        "--bootstrap-server kafka:9092 --alter --entity-type topics --entity-name raw "
        "--add-config max.message.bytes=1114112`, or lower sources[0].body_limit to at "
        "most 983052 (65536 bytes of the record are kept for headers)"
    )


def test_each_source_needs_its_own_limit_not_the_largest_one() -> None:
    # The large source writes elsewhere: the small source's topic only needs its size.
    config = cfg(
        {"name": "big", "topic": "big", "body_limit": 8 * MiB},
        {"name": "small", "topic": "small"},
    )
    limits = TopicLimits({"big": 8 * MiB + 64 * 1024, "small": DEFAULT_RECORD})
    assert source_topic_problems(config, limits) == []


def test_a_shared_topic_needs_its_largest_source_and_names_only_those_over() -> None:
    config = cfg(
        {"name": "a", "topic": "raw", "body_limit": 4 * MiB},
        {"name": "b", "topic": "raw"},
        {"name": "c", "topic": "raw", "body_limit": 2 * MiB},
    )
    (problem,) = source_topic_problems(config, TopicLimits({"raw": DEFAULT_RECORD}))
    assert f"below the {4 * MiB + 65536} needed" in problem
    assert "webhooks of sources 'a', 'c' whose record" in problem
    assert f"max.message.bytes={4 * MiB + 65536}`" in problem
    assert f"lower sources[0].body_limit and sources[2].body_limit to at most {MiB}" in problem


def test_a_limit_below_the_header_allowance_offers_no_body_limit() -> None:
    (problem,) = source_topic_problems(cfg({"name": "a"}), TopicLimits({"webhooks.raw": 1000}))
    assert "body_limit" not in problem
    assert problem.endswith("--add-config max.message.bytes=1114112`")


def test_missing_and_unchecked_topics_are_not_size_problems() -> None:
    config = cfg({"name": "a", "topic": "x"}, {"name": "b", "topic": "y"})
    limits = TopicLimits({"x": None, "y": None}, {"y": "TopicAuthorizationFailedError"})
    assert source_topic_problems(config, limits) == []


async def test_warn_logs_an_error_per_topic_and_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    describe = Describe({"raw": 1048588, "other": DEFAULT_RECORD})
    config = cfg({"name": "a", "topic": "raw"}, {"name": "b", "topic": "other"})
    with caplog.at_level(logging.INFO, "gateway.topics"):
        await check_topic_sizes(config, describe)
    assert describe.asked == [["raw", "other"]]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("topic 'raw' has max.message.bytes 1048588")


async def test_fail_refuses_to_start_with_every_problem() -> None:
    describe = Describe({"raw": 1048588, "other": 500_000})
    config = cfg({"name": "a", "topic": "raw"}, {"name": "b", "topic": "other"}, mode="fail")
    with pytest.raises(StartupError) as info:
        await check_topic_sizes(config, describe)
    message = str(info.value)
    assert message.startswith("gateway.check_topic_sizes is 'fail' and a source topic is too")
    assert "topic 'raw' has max.message.bytes 1048588" in message
    assert "topic 'other' has max.message.bytes 500000" in message


async def test_fail_still_starts_when_the_topics_cannot_be_described() -> None:
    describe = Describe({"raw": None}, {"raw": "TopicAuthorizationFailedError"})
    await check_topic_sizes(cfg({"name": "a", "topic": "raw"}, mode="fail"), describe)


async def test_off_asks_kafka_nothing() -> None:
    describe = Describe({"raw": 1})
    await check_topic_sizes(cfg({"name": "a", "topic": "raw"}, mode="off"), describe)
    assert describe.asked == []


def test_an_unknown_mode_names_the_key_the_value_and_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        cfg({"name": "a"}, mode="error")
    assert (
        "gateway.check_topic_sizes: got 'error': expected input should be 'warn', 'fail' or 'off'"
    ) in str(info.value)


def test_topics_create_needs_the_configured_limit_else_the_largest_record() -> None:
    config = cfg({"name": "a", "body_limit": 2 * MiB})
    assert needed_bytes(TopicSpec(name="t"), config) == 2 * MiB + 65536
    pinned = TopicSpec(name="t", config={"max.message.bytes": "5000000"})
    assert needed_bytes(pinned, config) == 5_000_000
    assert needed_bytes(TopicSpec(name="t", config={"max.message.bytes": "big"}), config) is None


def test_an_existing_topic_too_small_is_reported_with_the_fix_and_exit_1() -> None:
    spec = TopicSpec(name="webhooks.dlq")
    small = TopicOutcome(spec, False, 1048588, 1114112, raise_command="kafka-configs.sh ...")
    assert small.describe() == (
        "exists   webhooks.dlq (max.message.bytes 1048588 < 1114112 needed: "
        "raise it with `kafka-configs.sh ...`)"
    )
    fine = TopicOutcome(spec, False, 1114112, 1114112)
    assert fine.describe() == "exists   webhooks.dlq (left unchanged)"
    unchecked = TopicOutcome(spec, False, unchecked="TopicAuthorizationFailedError")
    assert unchecked.describe() == (
        "exists   webhooks.dlq (left unchanged; max.message.bytes not checked: "
        "TopicAuthorizationFailedError)"
    )
    created = TopicOutcome(spec, True)
    assert exit_status_for([created, fine, unchecked]) == 0
    assert exit_status_for([created, small, fine]) == 1
