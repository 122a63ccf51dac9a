"""A Redis client for the dedup store, whatever the deployment: one server, a Redis
Cluster, or a master watched by Sentinel; plain or TLS; a password or an ACL user.

The topology is ``consumers.dedup.redis_mode``; everything else comes from
``redis_url``, so one secret holds the whole address::

    redis://[user:password@]host:6379/0            standalone
    rediss://user:password@h1:6379,h2:6379         cluster: seed nodes (any few)
    redis://user:password@s1:26379,s2:26379/0      sentinel: the sentinels

``rediss://`` verifies the servers against the system's CA store (or
``redis_ca_file``) with hostname checking; credentials are those of the data nodes
(an ACL user needs ``+get +mget +set +ping`` on ``~<key_prefix>*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from consumers.config import DedupConfig

# Every command waits at most this long: an answer slower than that is an outage, and
# the engine's retry (not a blocked delivery) is the right response to it.
SOCKET_TIMEOUT_SECONDS = 5.0
_DEFAULT_PORTS = {"standalone": 6379, "cluster": 6379, "sentinel": 26379}


@dataclass(frozen=True, slots=True)
class RedisURL:
    tls: bool
    hosts: tuple[tuple[str, int | None], ...]
    username: str | None
    password: str | None
    db: int

    def addresses(self, mode: str) -> list[tuple[str, int]]:
        default = _DEFAULT_PORTS[mode]
        return [(host, default if port is None else port) for host, port in self.hosts]


def _host_port(part: str) -> tuple[str, int | None]:
    if part.startswith("["):  # [::1]:6379
        host, sep, rest = part[1:].partition("]")
        if not sep:
            raise ValueError(f"a closing ']' in host {part!r}")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"host:port, not {part!r}")
    else:
        host, _, port = part.partition(":")
    if not host:
        raise ValueError(f"a host name in {part!r}")
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a port from 1 to 65535 in {part!r}")
    return host, int(port)


def parse_redis_url(url: str) -> RedisURL:
    """``redis://`` or ``rediss://``, one or more comma-separated hosts, an optional
    database number; ``ValueError`` naming what is wrong (never the password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError("a redis:// or rediss:// URL")
    location, _, tail = rest.partition("/")
    path = tail.partition("?")[0].partition("#")[0]
    userinfo, at, hostlist = location.rpartition("@")
    if not at:
        hostlist = location
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host_port(part.strip()) for part in hostlist.split(","))
    if path and not path.isdigit():
        raise ValueError(f"a database number after the hosts, not {path!r}")
    return RedisURL(scheme == "rediss", hosts, username, password, int(path or 0))


def _tls_kwargs(config: DedupConfig) -> dict[str, Any]:
    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    return {
        "ssl": True,
        "ssl_ca_certs": text(config.redis_ca_file),
        "ssl_certfile": text(config.redis_cert_file),
        "ssl_keyfile": text(config.redis_key_file),
        "ssl_check_hostname": config.redis_check_hostname,
    }


@dataclass(frozen=True, slots=True)
class Connection:
    """The client, whether it is a cluster client (whose multi-key reads must be split
    by slot), and the sentinels' own clients, which outlive the master's."""

    client: Any
    cluster: bool = False
    sentinels: tuple[Any, ...] = ()

    async def aclose(self) -> None:
        await self.client.aclose()
        for sentinel in self.sentinels:
            await sentinel.aclose()


def connect(config: DedupConfig) -> Connection:
    """The client for ``config``; nothing is contacted yet."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    assert config.redis_url is not None  # checked by DedupConfig
    url = parse_redis_url(config.redis_url.get_secret_value())
    kwargs: dict[str, Any] = {
        "username": url.username,
        "password": url.password,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
    }
    tls = _tls_kwargs(config) if url.tls else {}
    mode = config.redis_mode
    if mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in url.addresses(mode)]
        return Connection(RedisCluster(startup_nodes=nodes, **kwargs, **tls), cluster=True)
    if mode == "sentinel":
        assert config.redis_sentinel_master is not None  # checked by DedupConfig
        secret = config.redis_sentinel_password
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
            "password": secret.get_secret_value() if secret is not None else None,
            **tls,
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            url.addresses(mode), sentinel_kwargs=sentinel_kwargs, **kwargs, **tls
        )
        master = sentinel.master_for(config.redis_sentinel_master, db=url.db)
        return Connection(master, sentinels=tuple(sentinel.sentinels))
    ((host, port),) = url.addresses(mode)
    return Connection(aioredis.Redis(host=host, port=port, db=url.db, **kwargs, **tls))


__all__ = ["SOCKET_TIMEOUT_SECONDS", "Connection", "RedisURL", "connect", "parse_redis_url"]
