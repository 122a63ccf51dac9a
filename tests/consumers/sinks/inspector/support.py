"""Helpers of the inspector tests: events, contexts, config files, page and API readers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry

from consumers.event import Event
from consumers.sinks import SinkContext
from consumers.sinks.inspector import InspectorSink

# What the ``started`` fixture gives: the running sink, a client for it, its registry.
Started = tuple[InspectorSink, httpx.AsyncClient, CollectorRegistry]


def event(n: int, *, source: str = "crystallize", type_: str = "order", key: str = "k1",
          body: bytes = b'{"order": {"get": {"id": "k1"}}}') -> Event:  # fmt: skip
    return Event(
        id=f"e{n}",
        source=source,
        type=type_,
        key=key,
        time=f"2025-10-07T11:48:{n:02d}.000000Z",
        headers={"x-crystallize-signature": "sig"},
        body=body,
        topic="webhooks.raw",
        partition=2,
        offset=100 + n,
    )


def context(
    registry: CollectorRegistry | None = None,
    *,
    config_path: Path | None = None,
    sink_types: Mapping[str, str] | None = None,
) -> SinkContext:
    return SinkContext(
        "127.0.0.1:9",
        {},
        registry or CollectorRegistry(),
        config_path=config_path,
        sink_types=dict(sink_types or {}),
    )


def write_config(path: Path, sinks: Mapping[str, Mapping[str, Any]]) -> Path:
    """A consumer config file with these sinks, every one of them routed."""
    consumers = {
        "group": "g",
        "topics": ["webhooks.raw"],
        "dlq_topic": "webhooks.dlq",
        "sinks": {name: dict(section) for name, section in sinks.items()},
        "routes": [{"name": "all", "sinks": list(sinks)}],
    }
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                                    "consumers": consumers}))  # fmt: skip
    return path


def token_of(page: str) -> str:
    match = re.search(r'name="inspector-token" content="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status
    return doc


async def read_sse(lines: AsyncIterator[str], count: int) -> list[dict[str, Any]]:
    """The next ``count`` webhook events of an open stream's lines."""
    found: list[dict[str, Any]] = []
    frame: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if frame.get("event") == "webhook":
                record = json.loads(frame["data"])
                assert str(record["seq"]) == frame["id"]
                found.append(record)
                if len(found) == count:
                    return found
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = value
    raise AssertionError(f"stream ended after {found}")
