"""Redis URLs for every topology, and the dedup config's checks of them."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from consumers.config import DedupConfig, parse_config
from consumers.redisconn import connect, parse_redis_url
from webhook_common.errors import ConfigError


def test_one_host_with_acl_user_and_database() -> None:
    url = parse_redis_url("redis://webhookgw:p%40ss@redis.internal:6380/3")
    assert url == parse_redis_url("redis://webhookgw:p%40ss@redis.internal:6380/3")
    assert (url.tls, url.hosts, url.username, url.password, url.db) == (
        False,
        (("redis.internal", 6380),),
        "webhookgw",
        "p@ss",
        3,
    )


def test_several_hosts_default_ports_per_mode_and_ipv6() -> None:
    url = parse_redis_url("rediss://:secret@a,b:7001,[::1]:7002")
    assert (url.tls, url.username, url.password, url.db) == (True, None, "secret", 0)
    assert url.addresses("cluster") == [("a", 6379), ("b", 7001), ("::1", 7002)]
    assert url.addresses("sentinel")[0] == ("a", 26379)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h", "a redis:// or rediss:// URL"),
        ("unix:///tmp/redis.sock", "a redis:// or rediss:// URL"),
        ("redis://h:0", "a port from 1 to 65535"),
        ("redis://h:port", "a port from 1 to 65535"),
        ("redis://:pw@", "a host name"),
        ("redis://h/db", "a database number"),
        ("redis://[::1:6379", "a closing ']'"),
    ],
)
def test_bad_urls_say_what_is_expected(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_redis_url(url)


def _dedup(**dedup: Any) -> DedupConfig:
    consumers = {"dedup": {"store": "redis", **dedup}, "sinks": {"out": {"type": "file"}}}
    return parse_config({"consumers": consumers}).consumers.dedup


_SENTINEL = {"redis_url": "redis://s1", "redis_mode": "sentinel"}
_INCONSISTENT = [
    ({"redis_url": "redis://a,b"}, "redis_url", "one host when redis_mode is 'standalone'"),
    ({"redis_url": "redis://a/2", "redis_mode": "cluster"}, "redis_url", "database 0"),
    (_SENTINEL, "redis_sentinel_master", "the master's name"),
    (
        {"redis_url": "redis://a", "redis_sentinel_master": "m"},
        "redis_sentinel_master",
        "unless redis_mode is 'sentinel'",
    ),
    ({"redis_url": "redis://a", "redis_ca_file": "c"}, "redis_ca_file", "unless redis_url is"),
    ({"redis_url": "rediss://a", "redis_key_file": "k"}, "redis_cert_file", "the client cert"),
    ({"redis_url": "rediss://a", "redis_cert_file": "c"}, "redis_key_file", "the key of the"),
    ({"redis_url": "http://:hunter2@a"}, "redis_url", "a redis:// or rediss:// URL"),
]


@pytest.mark.parametrize(("dedup", "key", "expected"), _INCONSISTENT)
def test_inconsistent_settings_name_the_key(dedup: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _dedup(**dedup)
    message = str(info.value)
    assert f"consumers.dedup.{key}: " in message
    assert expected in message
    assert "hunter2" not in message


async def test_each_mode_builds_its_client_without_contacting_redis() -> None:
    standalone = connect(_dedup(redis_url="rediss://u:p@h:6390/2", redis_ca_file="ca.pem"))
    assert isinstance(standalone.client, Redis)
    assert not standalone.cluster
    kwargs = standalone.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["username"]) == ("h", 6390, 2, "u")
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_check_hostname"]) == ("ca.pem", True)
    sentinel = connect(
        _dedup(redis_url="redis://s1,s2:26380/1", redis_mode="sentinel", redis_sentinel_master="m")
    )
    assert len(sentinel.sentinels) == 2
    assert not sentinel.cluster
    cluster = connect(_dedup(redis_url="redis://a:7000,b:7001", redis_mode="cluster"))
    assert isinstance(cluster.client, RedisCluster)
    assert cluster.cluster
    for c in (standalone, sentinel, cluster):
        await c.aclose()
