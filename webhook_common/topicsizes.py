"""Whether Kafka topics take the records their producers are sized for.

A producer's ``max_request_size`` only bounds what the client sends; the broker refuses
any record over the topic's ``max.message.bytes``, and that refusal is final (waiting
does not make a record fit). Gateway and consumers therefore read the effective
``max.message.bytes`` of the topics they write at start-up and say, in one wording,
which topic is too small, what that does to records and how to raise it.

Reading topic configs needs the DescribeConfigs permission, which managed Kafka may
deny: such a topic is reported as not checked (one warning), never as a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from webhook_common.config import KafkaSettings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = "max.message.bytes"
UNKNOWN_TOPIC_OR_PARTITION = 3  # Kafka protocol error code


class ConfigDescriber(Protocol):
    """The part of :class:`AIOKafkaAdminClient` read here; tests substitute a fake."""

    async def describe_configs(
        self, config_resources: list[ConfigResource], include_synonyms: bool = False
    ) -> list[Any]: ...


class AdminClient(ConfigDescriber, Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TopicLimits:
    """``max.message.bytes`` per topic asked about: ``None`` when the topic does not
    exist or could not be described; ``unchecked`` says why for the latter."""

    limits: Mapping[str, int | None]
    unchecked: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A topic whose ``max.message.bytes`` (``limit``) is below ``needed``."""

    topic: str
    limit: int
    needed: int

    def raise_command(self, bootstrap_servers: str) -> str:
        return (
            f"kafka-configs.sh --bootstrap-server {bootstrap_servers} --alter "
            f"--entity-type topics --entity-name {self.topic} "
            f"--add-config {MAX_MESSAGE_BYTES}={self.needed}"
        )

    def message(self, bootstrap_servers: str, effect: str, alternative: str | None = None) -> str:
        """The one wording both sides log: topic, its limit, the need, the effect, the fix."""
        fix = f"raise it with `{self.raise_command(bootstrap_servers)}`"
        if alternative:
            fix += f", or {alternative}"
        return (
            f"topic {self.topic!r} has {MAX_MESSAGE_BYTES} {self.limit}, below the "
            f"{self.needed} needed: {effect}; {fix}"
        )


def shortfalls(limits: TopicLimits, needed: Mapping[str, int]) -> list[Shortfall]:
    """Every topic of ``needed`` whose known limit is below its need (missing and
    unchecked topics have nothing to compare)."""
    found = []
    for topic, need in needed.items():
        limit = limits.limits.get(topic)
        if limit is not None and limit < need:
            found.append(Shortfall(topic, limit, need))
    return found


def _error_text(exc: Exception) -> str:
    # aiokafka's messages often start with the class name already.
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _entry_value(entries: Sequence[Sequence[Any]]) -> int | None:
    # Every DescribeConfigs version starts a config entry with (name, value, ...).
    for entry in entries:
        if entry[0] == MAX_MESSAGE_BYTES:
            try:
                return int(entry[1])
            except (TypeError, ValueError):
                return None
    return None


async def describe_max_message_bytes(admin: ConfigDescriber, topics: Sequence[str]) -> TopicLimits:
    """One DescribeConfigs request for the effective ``max.message.bytes`` of ``topics``
    (the topic's own setting, else the broker's default)."""
    names = list(dict.fromkeys(topics))
    limits: dict[str, int | None] = dict.fromkeys(names)
    if not names:
        return TopicLimits(limits)
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {MAX_MESSAGE_BYTES: None}) for name in names
    ]
    try:
        responses = await admin.describe_configs(resources)
    except KafkaError as exc:
        return TopicLimits(limits, dict.fromkeys(names, _error_text(exc)))
    unchecked: dict[str, str] = {}
    answered: set[str] = set()
    for response in responses:
        for code, message, _type, name, entries, *_ in response.resources:
            answered.add(name)
            if code == 0:
                limits[name] = _entry_value(entries)
                if limits[name] is None:
                    unchecked[name] = f"the broker gave no {MAX_MESSAGE_BYTES}"
            elif code != UNKNOWN_TOPIC_OR_PARTITION:  # a missing topic is reported elsewhere
                error = for_code(code).__name__
                unchecked[name] = f"{error}: {message}" if message else error
    for name in names:
        if name not in answered:
            unchecked[name] = "the broker did not answer for it"
    return TopicLimits(limits, unchecked)


async def fetch_max_message_bytes(
    kafka: KafkaSettings,
    topics: Sequence[str],
    *,
    admin_factory: Callable[..., AdminClient] = AIOKafkaAdminClient,
) -> TopicLimits:
    """:func:`describe_max_message_bytes` through a short-lived admin client. What could
    not be checked is logged once as a warning; nothing here raises."""
    names = list(dict.fromkeys(topics))
    # Bounded, so a broker that accepts connections but never answers cannot hold up
    # the start-up of the process asking.
    timeout = kafka.request_timeout_ms / 1000
    admin = admin_factory(**kafka.client_kwargs())
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            result = await describe_max_message_bytes(admin, names)
    except (KafkaError, TimeoutError) as exc:
        result = TopicLimits(dict.fromkeys(names), dict.fromkeys(names, _error_text(exc)))
    finally:
        await admin.close()
    if result.unchecked:
        _warn_unchecked(result.unchecked)
    return result


def _warn_unchecked(unchecked: Mapping[str, str]) -> None:
    by_reason: dict[str, list[str]] = {}
    for topic, reason in unchecked.items():
        by_reason.setdefault(reason, []).append(topic)
    why = "; ".join(f"{', '.join(topics)}: {reason}" for reason, topics in by_reason.items())
    denied = any("Authorization" in reason for reason in by_reason)
    hint = "grant DescribeConfigs on them, or compare" if denied else "compare"
    log.warning(
        "topic size check skipped, cannot read %s (%s): whether these topics take the "
        "largest records is unknown; %s their %s by hand",
        MAX_MESSAGE_BYTES,
        why,
        hint,
        MAX_MESSAGE_BYTES,
    )
