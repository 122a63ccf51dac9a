"""Running ``python -m consumers`` as a user would, for integration tests.

Every process started here is stopped by the fixture or context manager that started it;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaProducer

# One implementation for the fault runner and the tests (re-exported for the tests).
from faults.procs import ROOT as ROOT
from faults.procs import Consumer, wait_for
from faults.procs import free_port as free_port
from faults.reconcile import read_topic as read_topic
from faults.target import Target
from webhook_common.contract import EventMeta, format_time

# A real HTTP server an ``http`` sink posts to; see :class:`faults.target.Target`.
TargetServer = Target


async def wait_until(
    check: Callable[[], Any], within: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    return await wait_for(check, within, what, interval, AssertionError)


def write_config(path: Path, kafka_bootstrap: str, consumers: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump({"kafka": {"bootstrap_servers": kafka_bootstrap}, "consumers": consumers})
    )
    return path


class ConsumerProcess(Consumer):
    """``python -m consumers run`` in a subprocess, logs to a file."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        group: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(config, log, env, group=group)
        self.config = config
        self.group = group

    @property
    def url(self) -> str:
        return self.admin_url

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.url + "/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def logs(self) -> str:
        return self.tail(6000)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"consumer ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def consumers_running(*procs: ConsumerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop_quietly()


def meta(
    event_id: str,
    key: str,
    type_: str = "order.updated",
    when: float | None = None,
    headers: dict[str, str] | None = None,
) -> EventMeta:
    return EventMeta(
        id=event_id,
        source="crystallize",
        type=type_,
        time=format_time(time.time() if when is None else when),
        subject=key,
        http_headers=headers or {},
    )


async def produce(
    bootstrap: str,
    topic: str,
    events: Sequence[tuple[EventMeta, bytes]],
    *,
    partition: int | None = None,
    max_request_size: int = 1024 * 1024,
) -> list[tuple[int, int]]:
    """Produce contract records (key = subject); returns (partition, offset) of each.
    ``max_request_size``: raise it for records as large as the gateway writes."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        max_request_size=max_request_size,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value=body,
                key=m.subject.encode(),
                headers=m.to_headers(),
                partition=partition,
            )
            for m, body in events
        ]
        results = [await f for f in futures]
    finally:
        await producer.stop()
    return [(md.partition, md.offset) for md in results]


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic`` (partitions without one are absent)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.strip()]
