"""The ingress sections of the shared YAML file: ``kafka``, ``topics``, ``gateway``, ``sources``.

Other sections (``consumers``) belong to the other side and are ignored here. Loading
happens once, in ``__main__``: :func:`load` reads and validates the file, then
:func:`gateway.verifiers.registry.build_sources` turns each source into a ready
:class:`gateway.app.Source` with its verifier built.

Defaults that depend on the provider (which methods, which JSON pointers give the
entity id, which provider headers travel into the Kafka record) come from
:data:`PROVIDER_DEFAULTS`, keyed by the verifier type; anything set in the file wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator

from webhook_common.config import (
    ConfigPath,
    KafkaSettings,
    RemembersConfigDir,
    StrictModel,
    config_dir_of,
    load_file,
    validate,
)
from webhook_common.errors import ConfigError
from webhook_common.jsonpointer import parse_pointer

MiB = 1024 * 1024
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ALL_METHODS: tuple[Method, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]

# Kafka's own rule for topic names.
_TOPIC_NAME = r"^[A-Za-z0-9._-]{1,249}$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

# Room for the record's headers and batch framing on top of the largest body, so a
# body at its limit always fits into one produce request.
RECORD_OVERHEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    methods: tuple[Method, ...]
    key_pointers: tuple[str, ...]
    key_entity_get_id: bool
    key_query_param: str | None
    forward_headers: tuple[str, ...]


GENERIC_DEFAULTS = ProviderDefaults(
    methods=("POST",),
    key_pointers=("/id",),
    key_entity_get_id=False,
    key_query_param=None,
    forward_headers=(),
)

PROVIDER_DEFAULTS: Mapping[str, ProviderDefaults] = {
    # Crystallize calls webhooks with any of the five methods (GET ones carry no body
    # and put the entity id into the `id` query parameter). Bodies are GraphQL results
    # shaped `{"<entity>": {"get": {...}}}`. The signature header travels with the
    # record so an auditor can re-check the raw value against it (it is a MAC over this
    # one body, short-lived, not a secret).
    "crystallize": ProviderDefaults(
        methods=ALL_METHODS,
        key_pointers=(
            "/order/get/id",
            "/item/get/id",
            "/customer/get/identifier",
            "/orderId",
            "/id",
        ),
        key_entity_get_id=True,
        key_query_param="id",
        forward_headers=("x-crystallize-signature",),
    ),
}


class ProducerSettings(StrictModel):
    """``gateway.producer``: the one Kafka producer of the process."""

    ack_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # How long a record may wait for others to share its produce request. aiokafka
    # keeps one request in flight per broker, so records batch up behind it anyway;
    # 1 ms measured best at 16-256 connections (5 ms added that much to every answer).
    linger_ms: int = Field(default=1, ge=0, le=1000)
    # Largest batch per partition (aiokafka's `max_batch_size`). Its 16 KiB default
    # holds ~20 typical webhooks: under load `send()` then waits for the batch to
    # drain, which is where the tail latency came from.
    max_batch_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * MiB)
    compression: Compression = "lz4"

    @field_validator("compression")
    @classmethod
    def _codec_installed(cls, value: Compression) -> Compression:
        if value == "none":
            return value
        from aiokafka import codec

        available = {
            "gzip": codec.has_gzip,
            "snappy": codec.has_snappy,
            "lz4": codec.has_lz4,
            "zstd": codec.has_zstd,
        }[value]
        if not available():
            raise ValueError(
                f"a codec whose library is installed ({value!r} needs cramjam: "
                "pip install cramjam), or 'gzip' / 'none'"
            )
        return value


class HttpLimits(StrictModel):
    """``gateway.http``: limits of the webhook port's HTTP server, against slow or
    abusive clients (values and reasons in ``docs/reliability.md``)."""

    # Whole request head (request line and headers) must arrive within this, or the
    # connection is closed: uvicorn alone waits forever for a slow sender of headers.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # The body must arrive within this once the head is in, else 408.
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # An idle keep-alive connection is closed after this.
    keep_alive_seconds: float = Field(default=5.0, gt=0, le=600)
    # Largest request head accepted (bytes); bigger ones are refused before the app runs.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # More open connections than this: uvicorn answers 503 at once.
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)


class SpoolSettings(StrictModel):
    """``gateway.spool``: the optional durable spool (see the ``gateway.spool`` package and
    ``docs/reliability.md``, scenario 6). Off by default."""

    enabled: bool = False
    # One directory per gateway process (a lock file enforces it; with `workers` N > 1,
    # worker i uses `<path>/worker-<i>`); the journal holds webhook bodies at rest
    # (files 0600, directory 0700). Written in the file, a relative path is taken from
    # the file's directory; this default, written nowhere, from the working directory.
    path: ConfigPath = Path("./var/spool")
    # Most bytes of undrained records; over it, 503 as without a spool.
    max_bytes: int = Field(default=1024 * MiB, ge=MiB, le=1 << 50)
    # Journal segment size; a fully drained segment file is deleted.
    segment_bytes: int = Field(default=64 * MiB, ge=64 * 1024, le=4096 * MiB)
    # fsync before answering 202 (off: survives a process crash, not a power loss).
    fsync: bool = True
    # Records the drainer hands to the producer at once.
    drain_batch: int = Field(default=500, ge=1, le=100_000)
    # Pause between drain attempts while Kafka does not acknowledge.
    retry_seconds: float = Field(default=1.0, gt=0, le=300)
    # `/readyz` turns 503 when the spool made no progress for this long although Kafka
    # is reachable and the topics exist (a record Kafka keeps refusing): traffic goes to
    # the gateways that can still deliver. A plain Kafka outage never counts.
    stall_seconds: float = Field(default=60.0, gt=0, le=86_400)


class GatewaySection(StrictModel):
    """The ``gateway:`` section: process-wide ingress settings."""

    producer: ProducerSettings = ProducerSettings()
    http: HttpLimits = HttpLimits()
    spool: SpoolSettings = SpoolSettings()
    max_in_flight: int = Field(default=1000, ge=1, le=1_000_000)
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0, le=3600)
    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Gateway processes behind one webhook port (`serve --workers` wins). 1: a single
    # process, no supervisor. Containers keep 1 and scale with replicas.
    workers: int = Field(default=1, ge=1, le=64)
    # Where /docs and /openapi.json are served: the admin port (the default: the public
    # port answers webhooks and nothing else), the webhook port, or nowhere.
    api_docs: Literal["admin", "webhook", "off"] = "admin"
    # At start-up, compare each source topic's max.message.bytes with the largest record
    # its sources send. `warn` logs an error and serves: topic configs drift apart from
    # deployments (another team, a broker upgrade), and refusing to start would turn
    # "large webhooks refused" into "all webhooks refused". `fail` refuses to start, for
    # pipelines that provision topics with the gateway; `off` asks Kafka nothing.
    check_topic_sizes: Literal["warn", "fail", "off"] = "warn"


class TopicSpec(StrictModel):
    """One entry of the top-level ``topics`` list (what ``topics create`` makes)."""

    name: str = Field(pattern=_TOPIC_NAME)
    partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    config: dict[str, str] = Field(default_factory=dict)


class VerifierSection(BaseModel):
    """``sources[i].verifier``: ``type`` picks the entry point; every other key belongs
    to that verifier's own ``Config`` and is validated by the registry."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(min_length=1)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class KeyRules(StrictModel):
    """``sources[i].key``: where the entity id (the Kafka key) comes from. An unset
    field takes the provider default."""

    pointers: list[str] | None = None
    entity_get_id: bool | None = None
    query_param: str | None = None

    @field_validator("pointers")
    @classmethod
    def _pointers(cls, value: list[str] | None) -> list[str] | None:
        for pointer in value or ():
            parse_pointer(pointer)
        return value


class RateLimit(StrictModel):
    """``sources[i].rate_limit``: a token bucket; over it, 429 with ``Retry-After``."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(default=1, ge=1, le=1_000_000)


class SourceConfig(StrictModel):
    """One entry of ``sources``: a provider endpoint."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    path: str | None = Field(default=None, pattern=r"^(/[A-Za-z0-9_.~-]+)+$")
    methods: list[Method] | None = Field(default=None, min_length=1)
    verifier: VerifierSection
    secrets: list[SecretStr] = Field(default_factory=list)
    body_limit: int = Field(default=MiB, ge=1, le=64 * MiB)
    require_json: bool = True
    key: KeyRules = KeyRules()
    topic: str = Field(default="webhooks.raw", pattern=_TOPIC_NAME)
    public_url: str | None = None
    forward_headers: list[str] | None = None
    rate_limit: RateLimit | None = None
    # Which id dedup sees (`ce_id`): `auto` the provider's id when its signature covers
    # it, else a digest of the signed content (a replayed delivery with a fresh, unsigned
    # id is still a duplicate); `provider` the provider's id even when unsigned;
    # `digest` always the digest. The provider's id is kept in `ce_providerid`.
    event_id: Literal["auto", "provider", "digest"] = "auto"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "an absolute http(s) URL such as 'https://hooks.example.com/webhooks/x'"
            )
        if parts.query or parts.fragment:
            raise ValueError("a URL without query or fragment")
        return value.rstrip("/")

    @field_validator("forward_headers")
    @classmethod
    def _header_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"HTTP header names (token characters), not {name!r}")
        return [name.lower() for name in value]

    @property
    def route_path(self) -> str:
        return self.path or f"/webhooks/{self.name}"

    @property
    def defaults(self) -> ProviderDefaults:
        return PROVIDER_DEFAULTS.get(self.verifier.type, GENERIC_DEFAULTS)


class GatewayConfig(RemembersConfigDir):
    """The whole config file as the gateway reads it (``kafka``, ``topics``, ``gateway``,
    ``sources``); other top-level sections belong to the consumers and are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    topics: list[TopicSpec] = Field(default_factory=list)
    gateway: GatewaySection = GatewaySection()
    sources: list[SourceConfig] = Field(min_length=1)

    @property
    def max_body_limit(self) -> int:
        return max(s.body_limit for s in self.sources)

    @property
    def max_request_size(self) -> int:
        """Producer ``max_request_size``: the largest body plus headroom for headers."""
        return self.max_body_limit + RECORD_OVERHEAD

    def topic_specs(self) -> list[TopicSpec]:
        """The ``topics`` list plus every source topic it does not name (with defaults)."""
        specs = list(self.topics)
        named = {t.name for t in specs}
        for source in self.sources:
            if source.topic not in named:
                specs.append(TopicSpec(name=source.topic))
                named.add(source.topic)
        return specs


def _cross_check(cfg: GatewayConfig) -> None:
    """What one entry cannot check alone: unique names, unambiguous paths."""
    problems: list[str] = []
    names: dict[str, int] = {}
    paths: dict[str, int] = {}
    for i, source in enumerate(cfg.sources):
        if source.name in names:
            problems.append(
                f"sources[{i}].name: got {source.name!r}: expected a name not already used "
                f"by sources[{names[source.name]}]"
            )
        names.setdefault(source.name, i)
        path = source.route_path
        key = "path" if source.path else "name"
        if path in paths:
            problems.append(
                f"sources[{i}].{key}: gives path {path!r}: expected a path not already used "
                f"by sources[{paths[path]}]"
            )
        paths.setdefault(path, i)
    # `/a/b` next to `/a` is ambiguous: `/a/b` could be source `/a` with event type `b`.
    for path, i in paths.items():
        parent = path.rsplit("/", 1)[0]
        if parent in paths:
            problems.append(
                f"sources[{i}].path: got {path!r}: expected a path that is not "
                f"sources[{paths[parent]}]'s path plus one segment (that is its event-type form)"
            )
    specs: dict[str, int] = {}
    for i, spec in enumerate(cfg.topics):
        if spec.name in specs:
            problems.append(
                f"topics[{i}].name: got {spec.name!r}: expected a topic not already listed "
                f"at topics[{specs[spec.name]}]"
            )
        specs.setdefault(spec.name, i)
    if problems:
        plural = "s" if len(problems) > 1 else ""
        raise ConfigError(
            f"config: {len(problems)} invalid value{plural}:\n  " + "\n  ".join(problems)
        )


def parse_config(
    data: Mapping[str, Any], *, source: str = "config", config_dir: Path | None = None
) -> GatewayConfig:
    """Validate the ingress sections of an already loaded document; relative paths in it
    are taken from ``config_dir`` (the directory of the file it came from)."""
    cfg = validate(GatewayConfig, data, source=source, config_dir=config_dir)
    _cross_check(cfg)
    return cfg


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate and validate a config file. Raises :class:`ConfigError`."""
    data = load_file(path, env, sections=("kafka", "topics", "gateway", "sources"))
    return parse_config(data, source=f"config file {str(path)!r}", config_dir=config_dir_of(path))
