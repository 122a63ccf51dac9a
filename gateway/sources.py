"""A configured source made ready for the hot path: defaults resolved, verifier built,
JSON pointers parsed. Built once at startup from :class:`gateway.config.GatewayConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig, SourceConfig
from gateway.extract import KeyExtractor
from gateway.ratelimit import TokenBucket
from gateway.verifiers import Verifier
from gateway.verifiers.registry import VerifierRegistry
from webhook_common.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    path: str
    methods: tuple[str, ...]
    verifier: Verifier
    body_limit: int
    require_json: bool
    keys: KeyExtractor
    topic: str
    public_url: str | None
    forward_headers: tuple[str, ...]
    rate_limit: TokenBucket | None = None
    event_id: str = "auto"


def resolve(
    index: int, sc: SourceConfig, registry: VerifierRegistry, config_dir: Path | None = None
) -> Source:
    defaults = sc.defaults
    verifier = registry.build_verifier(
        index, sc.verifier.type, sc.verifier.options(), sc.secrets, config_dir=config_dir
    )
    key = sc.key
    return Source(
        name=sc.name,
        path=sc.route_path,
        methods=tuple(sc.methods) if sc.methods else defaults.methods,
        verifier=verifier,
        body_limit=sc.body_limit,
        require_json=sc.require_json,
        keys=KeyExtractor.build(
            key.pointers if key.pointers is not None else defaults.key_pointers,
            key.entity_get_id if key.entity_get_id is not None else defaults.key_entity_get_id,
            # "" switches the provider's query parameter off.
            (key.query_param if key.query_param is not None else defaults.key_query_param) or None,
        ),
        topic=sc.topic,
        public_url=sc.public_url,
        forward_headers=(
            tuple(sc.forward_headers)
            if sc.forward_headers is not None
            else defaults.forward_headers
        ),
        rate_limit=(
            TokenBucket(sc.rate_limit.per_second, sc.rate_limit.burst) if sc.rate_limit else None
        ),
        event_id=sc.event_id,
    )


def build_sources(cfg: GatewayConfig, registry: VerifierRegistry) -> list[Source]:
    """Every source of ``cfg``; one :class:`ConfigError` listing all that fail."""
    sources: list[Source] = []
    problems: list[str] = []
    for i, sc in enumerate(cfg.sources):
        try:
            sources.append(resolve(i, sc, registry, cfg.config_dir))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("config: invalid verifier settings:\n  " + "\n  ".join(problems))
    return sources
