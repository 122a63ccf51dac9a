from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.config import load_config, parse_config
from webhook_common.errors import ConfigError

BASE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
    "gateway": {"anything": "belongs to the gateway"},
    "consumers": {"sinks": {"f": {"type": "file", "path": "/tmp/x"}}},
}


def with_consumers(**kw: Any) -> dict[str, Any]:
    return {**BASE, "consumers": {**BASE["consumers"], **kw}}


def test_defaults_and_other_sections_ignored() -> None:
    s = parse_config(BASE)
    c = s.consumers
    assert (c.group, c.topics, c.dlq_topic, c.unrouted) == (
        "webhook-consumers",
        ["webhooks.raw"],
        "webhooks.dlq",
        "drop",
    )
    assert c.dedup.store == "memory"
    assert c.concurrency.max_in_flight >= c.concurrency.max_parallel


def test_shared_file_with_interpolation(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "consumers:\n  group: ${GROUP:-g1}\n  sinks: {f: {type: file, path: ./x}}\n"
        "  routes: [{name: all, sinks: [f]}]\nsources: [{name: s}]\n"
    )
    assert load_config(path, env={}).consumers.group == "g1"
    assert load_config(path, env={"GROUP": "g2"}).consumers.group == "g2"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kafka": {}}, "consumers: missing"),
        (
            with_consumers(routes=[{"name": "r", "sinks": ["nope"]}]),
            "sink 'nope' to be one of consumers.sinks (f)",
        ),
        (with_consumers(dedup={"store": "redis"}), "redis_url to be set"),
        (with_consumers(dedup={"store": "disk"}), "consumers.dedup.store: got 'disk'"),
        (
            with_consumers(
                routes=[
                    {
                        "name": "r",
                        "sinks": ["f"],
                        "match": {"pointer": {"path": "/a", "equals": 1, "exists": True}},
                    }
                ]
            ),
            "exactly one of 'equals' or 'exists'",
        ),
        (
            with_consumers(
                routes=[{"name": "r", "sinks": ["f"], "match": {"pointer": {"path": "a"}}}]
            ),
            "consumers.routes[0].match.pointer",
        ),
        (
            with_consumers(
                routes=[{"name": "r", "sinks": ["f"], "match": {"pointer": {"path": "/a~2"}}}]
            ),
            "'~' only as ~0 or ~1",
        ),
        (with_consumers(unrouted="keep"), "consumers.unrouted: got 'keep'"),
        (with_consumers(retyr={}), "consumers.retyr: got {}: expected no such key"),
        (with_consumers(dlq_topic="webhooks.raw"), "dlq_topic not to be one of the consumed"),
        (
            with_consumers(routes=[{"name": "r", "sinks": ["f"]}, {"name": "r", "sinks": ["f"]}]),
            "routes[1].name 'r' to be unique",
        ),
        (
            with_consumers(concurrency={"max_in_flight": 0}),
            "consumers.concurrency.max_in_flight: got 0",
        ),
    ],
)
def test_errors_name_the_key_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


def test_secret_in_redis_url_is_not_printed() -> None:
    data = with_consumers(
        dedup={"store": "redis", "redis_url": "redis://:hunter2pw@h/0", "ttl_seconds": -1}
    )
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "ttl_seconds" in str(info.value)
    assert "hunter2pw" not in str(info.value)


def test_redis_url_is_kept_secret() -> None:
    s = parse_config(
        with_consumers(dedup={"store": "redis", "redis_url": "redis://:hunter2pw@h/0"})
    )
    assert s.consumers.dedup.redis_url is not None
    assert "hunter2pw" not in repr(s)
    assert s.consumers.dedup.redis_url.get_secret_value() == "redis://:hunter2pw@h/0"


def test_gateway_sections_are_not_interpolated(tmp_path: Path) -> None:
    # The consumer's environment lacks the gateway's verifier secrets: that is fine.
    path = tmp_path / "c.yaml"
    path.write_text(
        "sources: [{name: s, secrets: ['${GATEWAY_ONLY_SECRET}']}]\n"
        "consumers:\n  sinks: {f: {type: file, path: '${OUT:-x}'}}\n"
        "  routes: [{name: all, sinks: [f]}]\n"
    )
    assert load_config(path, env={}).consumers.sinks["f"]["path"] == "x"
    path.write_text("consumers:\n  group: ${NEEDED}\n  sinks: {f: {type: file}}\n")
    with pytest.raises(ConfigError, match=r"consumers.group: \$\{NEEDED\} is not set"):
        load_config(path, env={})
