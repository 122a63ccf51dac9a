"""Fakes and builders the spool tests share."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from gateway.config import SpoolSettings
from gateway.metrics import IngressMetrics
from gateway.producer import Record
from gateway.spool import Spool

SECRET = "spool-secret-0123456789"


ACK_TIMEOUT = 0.05


def rec(n: int, key: str | None = None, size: int = 0) -> Record:
    value = f'{{"n":{n}}}'.encode() + b" " * size
    return Record("webhooks.raw", (key or f"k{n % 3}").encode(), value, [("ce_id", b"id-%d" % n)])


class FakeKafka:
    """The producer's ``enqueue``: while down, futures stay unresolved (as aiokafka
    keeps retrying); when up, they resolve in order and the records count as written."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.written: list[Record] = []
        self.enqueued = 0
        self._waiting: list[tuple[Record, asyncio.Future[Any]]] = []

    async def enqueue(self, record: Record) -> asyncio.Future[Any]:
        self.enqueued += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, future))
        if self.up:
            self._resolve()
        return future

    def set_up(self) -> None:
        self.up = True
        self._resolve()

    def _resolve(self) -> None:
        for record, future in self._waiting:
            if not future.done():
                self.written.append(record)
                future.set_result(None)
        self._waiting = []


def settings(path: Path, **overrides: Any) -> SpoolSettings:
    values: dict[str, Any] = {"enabled": True, "path": path, "retry_seconds": 0.01}
    values.update(overrides)
    return SpoolSettings(**values)


async def open_spool(
    path: Path, kafka: FakeKafka, registry: CollectorRegistry, **overrides: Any
) -> Spool:
    spool = await Spool.open(
        settings(path, **overrides), IngressMetrics(registry), kafka.enqueue, ACK_TIMEOUT
    )
    spool.start()
    return spool


class SignedPort:
    """An in-process webhook port: ``post`` sends a correctly signed body to the
    ``shop`` source the spool tests configure."""

    def __init__(self, app: Any) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
        )

    async def post(self, body: bytes) -> httpx.Response:
        # Imported here: tests.gateway.support builds on modules this one is used by.
        from tests.gateway.support import SIG_HEADER, sign

        return await self.client.post(
            "/webhooks/shop", content=body, headers={SIG_HEADER: sign(SECRET, body)}
        )
