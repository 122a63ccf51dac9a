"""Creating the Kafka topics a config needs (``python -m gateway topics create``).

Topics are created explicitly, with the partitions and replication the config asks
for, rather than by broker auto-creation (which would use broker defaults and hide
typos in topic names). Running it again is harmless: existing topics are reported
and left as they are.

Every topic it creates accepts the gateway's largest record unless its config says
otherwise: the source topics, and the others of ``topics:``, among them the consumers'
dead-letter topic, whose records are copies of raw records with a few more headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.config import GatewayConfig, TopicSpec
from webhook_common.errors import WebhookGatewayError

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicsError(WebhookGatewayError):
    """Topics could not be listed or created; the message names the topic and error."""


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    spec: TopicSpec
    created: bool

    def describe(self) -> str:
        spec = self.spec
        if not self.created:
            return f"exists   {spec.name} (left unchanged)"
        return (
            f"created  {spec.name} ({spec.partitions} partitions, "
            f"replication factor {spec.replication_factor})"
        )


def new_topic(spec: TopicSpec, min_message_bytes: int | None) -> NewTopic:
    configs = dict(spec.config)
    # A body at the largest limit plus headers must fit the topic's record limit
    # (the broker default is about 1 MiB, smaller than a 1 MiB body plus headers).
    if min_message_bytes is not None and "max.message.bytes" not in configs:
        configs["max.message.bytes"] = str(min_message_bytes)
    return NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=configs)


async def create_topics(cfg: GatewayConfig) -> list[TopicOutcome]:
    """Create every topic of :meth:`GatewayConfig.topic_specs` that does not exist."""
    specs: Sequence[TopicSpec] = cfg.topic_specs()
    admin = AIOKafkaAdminClient(**cfg.kafka.client_kwargs())
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise TopicsError(
            f"cannot connect to Kafka at {cfg.kafka.bootstrap_servers!r}: {type(exc).__name__}"
        ) from None
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: set[str] = set()
        if missing:
            # Not only the source topics: a dead letter or a republished event is a raw
            # record again, and the gateway cannot tell which listed topic is which.
            response = await admin.create_topics(
                [new_topic(s, cfg.max_request_size) for s in missing]
            )
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code == 0:
                    created.add(name)
                elif code != TOPIC_ALREADY_EXISTS:  # created meanwhile by someone else
                    message = entry[2] if len(entry) > 2 and entry[2] else f"error code {code}"
                    raise TopicsError(f"cannot create topic {name!r}: {message}")
        return [TopicOutcome(s, s.name in created) for s in specs]
    except KafkaError as exc:
        raise TopicsError(f"Kafka admin request failed: {type(exc).__name__}: {exc}") from None
    finally:
        await admin.close()
