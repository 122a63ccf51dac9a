"""The consumers' configuration: YAML sections ``kafka`` and ``consumers``.

Built once by ``__main__`` from the file the gateway also reads (other sections are
ignored here) and passed down. ``consumers.sinks`` is only checked for shape here; each
sink's own keys are validated by the sink's ``Config`` model when the sinks are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from webhook_common.config import (
    ConfigPath,
    Invalid,
    KafkaSettings,
    StrictModel,
    config_dir_of,
    load_file,
    validate,
)
from webhook_common.contract import IdOrigin
from webhook_common.errors import ConfigError
from webhook_common.jsonpointer import parse_pointer


class DedupWindows(StrictModel):
    """How long marks are kept for one source (``consumers.dedup.sources.<name>``)."""

    ttl_seconds: int | None = Field(default=None, ge=1)
    derived_ttl_seconds: int | None = Field(default=None, ge=1)


class DedupConfig(StrictModel):
    """Where (event id, sink) marks live and for how long.

    ``ttl_seconds`` holds for ids the provider signs and for digests of signed content
    (``ce_idorigin`` ``provider``/``digest``): long, so a provider retry or a replay days
    later is still a duplicate. ``derived_ttl_seconds`` holds for ids the gateway had to
    derive because the provider sends none (``derived``, e.g. Crystallize): two genuine
    updates can have identical bodies, so the window only covers the provider's own
    retries of one delivery (seconds to minutes) and then lets an identical event through.
    """

    store: Literal["memory", "redis"] = "memory"
    ttl_seconds: int = Field(default=604_800, ge=1)
    derived_ttl_seconds: int = Field(default=300, ge=1)
    sources: dict[str, DedupWindows] = Field(default_factory=dict)
    # Bound of the memory store (the earliest-expiring marks are dropped first); about
    # 100 bytes a mark, so the default holds ~95 MB.
    max_entries: int = Field(default=1_000_000, ge=1)
    # May carry a password (redis://user:pw@host/0), so it is never printed.
    # ``rediss://`` is TLS. In cluster and sentinel mode the URL lists several hosts
    # (redis://user:pw@h1:6379,h2:6379/0): seed nodes of the cluster, or the sentinels.
    redis_url: SecretStr | None = None
    redis_mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    # The master's name the sentinels know (their ``sentinel monitor <name>``).
    redis_sentinel_master: str | None = None
    # The sentinels' own password (their ``requirepass``), when they have one.
    redis_sentinel_password: SecretStr | None = None
    # TLS (``rediss://``): the system's CA store unless a CA file is given; a client
    # certificate and key for mutual TLS.
    redis_ca_file: ConfigPath | None = None
    redis_cert_file: ConfigPath | None = None
    redis_key_file: ConfigPath | None = None
    redis_check_hostname: bool = True
    key_prefix: str = "webhookgw:dedup:"
    # Most checks or marks sent to Redis in one pipeline.
    batch_size: int = Field(default=500, ge=1, le=10_000)

    @model_validator(mode="after")
    def _redis_consistent(self) -> Self:
        if self.store != "redis":
            return self
        if not self.redis_url:
            raise ValueError("redis_url to be set when store is 'redis'")
        from consumers.redisconn import parse_redis_url

        try:
            url = parse_redis_url(self.redis_url.get_secret_value())
        except ValueError as exc:
            raise Invalid("redis_url", str(exc)) from None
        if self.redis_mode == "sentinel" and not self.redis_sentinel_master:
            raise Invalid(
                "redis_sentinel_master", "the master's name when redis_mode is 'sentinel'"
            )
        if self.redis_mode != "sentinel":
            for key in ("redis_sentinel_master", "redis_sentinel_password"):
                if getattr(self, key) is not None:
                    raise Invalid(key, "no value unless redis_mode is 'sentinel'")
        if self.redis_mode == "standalone" and len(url.hosts) > 1:
            raise Invalid(
                "redis_url",
                "one host when redis_mode is 'standalone' (several: set redis_mode to "
                "'cluster' or 'sentinel')",
            )
        if self.redis_mode == "cluster" and url.db != 0:
            raise Invalid(
                "redis_url", "database 0 when redis_mode is 'cluster' (a cluster has one)"
            )
        if not url.tls:
            for key in ("redis_ca_file", "redis_cert_file", "redis_key_file"):
                if getattr(self, key) is not None:
                    raise Invalid(key, "no value unless redis_url is rediss:// (TLS)")
        if self.redis_key_file is not None and self.redis_cert_file is None:
            raise Invalid("redis_cert_file", "the client certificate redis_key_file belongs to")
        if self.redis_cert_file is not None and self.redis_key_file is None:
            raise Invalid("redis_key_file", "the key of the client certificate redis_cert_file")
        return self

    def ttl_for(self, source: str, origin: IdOrigin) -> int:
        """Seconds a mark of an event of ``source`` with an id of ``origin`` is kept."""
        own = self.sources.get(source)
        if origin is IdOrigin.DERIVED:
            if own is not None and own.derived_ttl_seconds is not None:
                return own.derived_ttl_seconds
            return self.derived_ttl_seconds
        if own is not None and own.ttl_seconds is not None:
            return own.ttl_seconds
        return self.ttl_seconds


class PointerMatch(StrictModel):
    """A JSON pointer (RFC 6901) into the body: equals a value, or merely exists."""

    path: str = Field(pattern=r"^(/.*)?$")
    equals: Any = None
    exists: bool | None = None

    @field_validator("path")
    @classmethod
    def _rfc6901(cls, value: str) -> str:
        parse_pointer(value)  # ValueError names what is wrong: '~' only as ~0 or ~1
        return value

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        has_equals = "equals" in self.model_fields_set
        if has_equals == (self.exists is not None):
            raise ValueError("exactly one of 'equals' or 'exists'")
        return self


class MatchConfig(StrictModel):
    """All given conditions must hold; an empty match matches every event."""

    source: str | None = None
    type: str | None = None  # glob, e.g. "order.*"
    key: str | None = None  # glob
    headers: dict[str, str] = Field(default_factory=dict)
    pointer: PointerMatch | list[PointerMatch] | None = None


class RouteConfig(StrictModel):
    name: str = Field(min_length=1)
    match: MatchConfig = Field(default_factory=MatchConfig)
    sinks: list[str] = Field(min_length=1)


class RetryConfig(StrictModel):
    """Per-sink exponential backoff with full jitter, and a retry budget.

    An event gets at most ``max_attempts`` tries per sink before it is dead-lettered.
    The budget bounds retries across all events of a sink to ``budget_ratio`` of first
    attempts plus ``budget_min_per_second``, so an outage does not multiply the load on
    the failing target; a retry over budget waits for budget instead of being dropped.
    """

    initial_ms: int = Field(default=200, ge=1)
    max_ms: int = Field(default=30_000, ge=1)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_attempts: int = Field(default=8, ge=1)
    budget_ratio: float = Field(default=0.5, ge=0.0)
    budget_min_per_second: float = Field(default=5.0, gt=0.0)
    # The sink's circuit breaker (consumers/circuit.py): this many retriable failures in
    # a row, from any events, pause the sink's deliveries; one probe after
    # `circuit_open_ms`, doubling per failed probe up to `circuit_max_open_ms`. While it
    # is open events wait in Kafka and spend no attempts.
    circuit_failures: int = Field(default=5, ge=1)
    circuit_open_ms: int = Field(default=1_000, ge=1)
    circuit_max_open_ms: int = Field(default=30_000, ge=1)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.max_ms < self.initial_ms:
            raise ValueError("max_ms to be at least initial_ms")
        if self.circuit_max_open_ms < self.circuit_open_ms:
            raise ValueError("circuit_max_open_ms to be at least circuit_open_ms")
        return self


class ConcurrencyConfig(StrictModel):
    # Records fetched but not finished, over all partitions: fetching pauses here.
    # Throughput is this window over a record's time from fetch to commit (Little's
    # law): 1,000 gave ~3.8k events/s, 5,000 ~8-11k (docs/benchmarks.md). Memory cost
    # is the records themselves (5,000 x a few KiB).
    max_in_flight: int = Field(default=5_000, ge=1)
    # The same bound for one partition, so one hot partition cannot take every slot.
    per_partition: int = Field(default=2_000, ge=1)
    # Keys delivered concurrently (each key is sequential, in offset order).
    max_parallel: int = Field(default=100, ge=1)
    # Most events of different keys handed to a sink in one `send_batch` call (sinks that
    # have one: file, kafka, postgres). Deliveries ready at the same moment share a call;
    # an idle consumer waits for nothing. 1: every event is sent on its own.
    max_batch: int = Field(default=500, ge=1, le=10_000)


# The largest record the gateway writes with the default sources[].body_limit (1 MiB):
# the body plus the 64 KiB it keeps for headers and batch framing (its RECORD_OVERHEAD),
# which is also the max.message.bytes `gateway topics create` gives its topics.
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024 + 64 * 1024
# The gateway's largest body_limit (64 MiB) plus that overhead.
_LARGEST_RECORD_BYTES = 64 * 1024 * 1024 + 64 * 1024


class ConsumersSection(StrictModel):
    """The ``consumers:`` section."""

    group: str = Field(default="webhook-consumers", min_length=1)
    topics: list[str] = Field(default_factory=lambda: ["webhooks.raw"], min_length=1)
    dlq_topic: str = Field(default="webhooks.dlq", min_length=1)
    # The largest record the consumers write (a dead letter, a kafka sink's record):
    # those are records read from the consumed topics, so it must be what they hold.
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES, ge=64 * 1024, le=_LARGEST_RECORD_BYTES
    )
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    sinks: dict[str, dict[str, Any]] = Field(min_length=1)
    routes: list[RouteConfig] = Field(default_factory=list)
    unrouted: Literal["drop", "dead-letter"] = "drop"
    retry: RetryConfig = Field(default_factory=RetryConfig)
    concurrency: ConcurrencyConfig = Field(default_factory=ConcurrencyConfig)
    commit_interval_ms: int = Field(default=1_000, ge=10)
    # Where a group with no committed offset for a partition starts: the oldest retained
    # record, so nothing already acknowledged to a provider is skipped. `latest` skips
    # the backlog a new group would otherwise deliver (a new sink that only wants new
    # events).
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # As gateway.log_level / log_format; LOG_LEVEL / LOG_FORMAT and the command line win.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    shutdown_grace_seconds: float = Field(default=30.0, ge=0.0)

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = set()
        for i, route in enumerate(self.routes):
            if route.name in names:
                raise ValueError(f"routes[{i}].name {route.name!r} to be unique")
            names.add(route.name)
            for sink in route.sinks:
                if sink not in self.sinks:
                    known = ", ".join(sorted(self.sinks))
                    raise ValueError(
                        f"routes[{i}] ({route.name!r}) sink {sink!r} to be one of "
                        f"consumers.sinks ({known})"
                    )
        if self.dlq_topic in self.topics:
            raise ValueError("dlq_topic not to be one of the consumed topics")
        return self


class ConsumerConfig(StrictModel):
    """The whole config file as the consumers read it (``kafka``, ``consumers``); the rest
    of the file belongs to the gateway."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumers: ConsumersSection


def parse_config(
    data: Mapping[str, Any], *, source: str = "config", config_dir: Path | None = None
) -> ConsumerConfig:
    """Validate the consumer sections of an already loaded document; relative paths in it
    are taken from ``config_dir`` (the directory of the file it came from). The sinks'
    own options are validated when the sinks are built, from ``SinkContext.config_path``."""
    if "consumers" not in data:
        raise ConfigError(f"{source}: consumers: missing: expected a 'consumers' section")
    ours = {k: data[k] for k in ("kafka", "consumers") if k in data}
    return validate(ConsumerConfig, ours, source=source, config_dir=config_dir)


_SECTIONS = ("kafka", "consumers")


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> ConsumerConfig:
    """Read and validate the consumer sections of a config file.

    Only ``kafka`` and ``consumers`` are interpolated: the gateway's sections may name
    variables (its verifier secrets) that a consumer's environment rightly lacks.
    """
    ours = load_file(path, env, sections=_SECTIONS)
    return parse_config(ours, source=str(path), config_dir=config_dir_of(path))
