"""The consumers' start-up check of the topics they write (the DLQ topic, ``kafka`` sinks'
fixed topics) against ``consumers.max_record_bytes``; Kafka is a fake here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.__main__ import check_topic_sizes, topic_size_problems
from consumers.config import ConsumerConfig, parse_config
from consumers.plugins import build_sinks
from consumers.sinks import Sink, SinkContext
from consumers.sinks.kafka import KafkaSink
from webhook_common.config import KafkaSettings
from webhook_common.topicsizes import TopicLimits

NEEDED = 1024 * 1024 + 64 * 1024  # the default consumers.max_record_bytes


def setup(sinks: dict[str, dict[str, Any]]) -> tuple[ConsumerConfig, dict[str, Sink]]:
    settings = parse_config(
        {
            "kafka": {"bootstrap_servers": "kafka:9092"},
            "consumers": {"dlq_topic": "dlq", "sinks": sinks},
        }
    )
    context = SinkContext("kafka:9092", {}, CollectorRegistry())
    return settings, build_sinks(sinks, context)


class Describe:
    def __init__(self, limits: dict[str, int | None]) -> None:
        self.limits = limits
        self.asked: list[list[str]] = []

    async def __call__(self, kafka: KafkaSettings, topics: Sequence[str]) -> TopicLimits:
        self.asked.append(list(topics))
        return TopicLimits({t: self.limits.get(t) for t in topics})


def test_a_small_dlq_topic_says_dead_letters_become_references() -> None:
    settings, sinks = setup({"out": {"type": "log"}})
    (problem,) = topic_size_problems(settings, sinks, TopicLimits({"dlq": 1048588}))
    assert problem == (
        "topic 'dlq' has max.message.bytes 1048588, below the 1114112 needed: dead letters "
        "above 1048588 bytes will be written as `too_large` references (the original stays "
        "in its topic, for `replay --offsets`); raise it with `kafka-configs.sh "
        "--bootstrap-server kafka:9092 --alter --entity-type topics --entity-name dlq "
        "--add-config max.message.bytes=1114112`"
    )


def test_a_small_kafka_sink_topic_names_the_sink() -> None:
    settings, sinks = setup({"bus": {"type": "kafka", "topic": "events.all"}})
    limits = TopicLimits({"dlq": NEEDED, "events.all": 500_000})
    (problem,) = topic_size_problems(settings, sinks, limits)
    assert problem.startswith(
        "topic 'events.all' has max.message.bytes 500000, below the 1114112 needed: events "
        "above 500000 bytes that sink 'bus' republishes will be refused by the broker and "
        "dead-lettered; raise it with `kafka-configs.sh"
    )


async def test_check_asks_for_fixed_topics_only_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, sinks = setup(
        {
            "fixed": {"type": "kafka", "topic": "events.all"},
            "templated": {"type": "kafka", "topic": "events.{source}.{type}"},
            "out": {"type": "log"},
        }
    )
    describe = Describe({"dlq": 1048588, "events.all": NEEDED})
    with caplog.at_level(logging.INFO, "consumers"):
        await check_topic_sizes(settings, sinks, describe)
    assert describe.asked == [["dlq", "events.all"]]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("topic 'dlq' has max.message.bytes 1048588")


async def test_topics_that_fit_or_are_missing_say_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, sinks = setup({"bus": {"type": "kafka", "topic": "events.all"}})
    with caplog.at_level(logging.INFO, "consumers"):
        await check_topic_sizes(settings, sinks, Describe({"dlq": 2 * NEEDED}))
    assert caplog.records == []


@pytest.mark.parametrize(
    ("template", "fixed"),
    [
        ("events.all", "events.all"),
        ("events.{source}", None),
        ("events.{{raw}}", "events._raw_"),  # escaped braces, then made a legal name
    ],
)
def test_a_kafka_sink_has_a_fixed_topic_only_without_placeholders(
    template: str, fixed: str | None
) -> None:
    _, sinks = setup({"bus": {"type": "kafka", "topic": template}})
    sink = sinks["bus"]
    assert isinstance(sink, KafkaSink)
    assert sink.fixed_topic == fixed
