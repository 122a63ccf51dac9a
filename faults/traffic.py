"""Sustained signed traffic: ``workers`` concurrent senders, each a distinct event per
request, until told to stop or ``max_requests`` were sent. Every answer is tallied;
the ids of 202 answers are what the scenario must find again."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson

# The ban on importing `gateway` is for `consumers`; the senders sign as Crystallize does.
from gateway.verifiers.crystallize import sign_hmac  # noqa: TID251

SIGNATURE_HEADER = "x-crystallize-signature"


@dataclass
class Tally:
    sent: int = 0
    acked: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def unavailable(self) -> int:
        return self.statuses[503]

    @property
    def other(self) -> int:
        """Neither 202 nor 503: other statuses and transport errors."""
        others = sum(n for s, n in self.statuses.items() if s not in (202, 503))
        return others + sum(self.errors.values())


class Traffic:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        workers: int = 8,
        rate: float = 200.0,
        max_requests: int = 50_000,
        entities: int = 50,
    ) -> None:
        self.url = url
        self.secret = secret
        self.workers = workers
        self.interval = workers / rate
        self.max_requests = max_requests
        self.entities = entities
        self.run_id = uuid.uuid4().hex[:8]
        self.tally = Tally()
        self.during: dict[str, Tally] = {}
        self._phase: Tally | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def phase(self, name: str) -> None:
        """Also tally the following answers under ``name`` (e.g. "outage")."""
        self._phase = self.during.setdefault(name, Tally())

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(self.workers)]

    async def stop(self) -> Tally:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.tally

    def _body(self, n: int) -> bytes:
        return orjson.dumps(
            {"order": {"get": {"id": f"order-{n % self.entities}"}}, "run": self.run_id, "n": n}
        )

    async def _worker(self, worker: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=15.0, limits=limits) as client:
            loop = asyncio.get_running_loop()
            while not self._stop.is_set() and self.tally.sent < self.max_requests:
                started = loop.time()
                n = self.tally.sent
                self.tally.sent += 1
                phase = self._phase
                if phase is not None:
                    phase.sent += 1
                body = self._body(n)
                headers = {
                    SIGNATURE_HEADER: sign_hmac(self.secret, body),
                    "content-type": "application/json",
                }
                try:
                    r = await client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    for t in (self.tally, phase):
                        if t is not None:
                            t.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.2)
                    continue
                for t in (self.tally, phase):
                    if t is not None:
                        t.statuses[r.status_code] += 1
                        if r.status_code == 202:
                            t.acked.append(r.json()["id"])
                pause = self.interval - (loop.time() - started)
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), pause)
