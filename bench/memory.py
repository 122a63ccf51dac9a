"""Bytes per remembered id of the memory dedup store, beside the obvious design
(an ``OrderedDict`` of (event id, sink) -> expiry, least recently used out), in one
run. Ids are made the way events bring them (36-character UUIDs) and are dropped
after marking, as the consumer drops an event once delivered: what stays is what the
store holds."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from consumers.dedup import MemoryDedupStore


@dataclass(frozen=True, slots=True)
class DedupMemory:
    ids: int
    bytes_per_id: float
    baseline_bytes_per_id: float


class _Baseline:
    def __init__(self) -> None:
        self.marks: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def mark(self, event_id: str, sink: str, ttl_seconds: int | None = None) -> None:
        self.marks[(event_id, sink)] = time.monotonic() + 604_800
        self.marks.move_to_end((event_id, sink))


async def _fill(store: MemoryDedupStore | _Baseline, n: int) -> None:
    for _ in range(n):
        await store.mark(str(uuid.uuid4()), "file")


def _bytes_per_id(make: type[MemoryDedupStore] | type[_Baseline], n: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = MemoryDedupStore(604_800, n) if make is MemoryDedupStore else _Baseline()
        asyncio.run(_fill(store, n))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del store
    return held / n


def dedup_memory(n: int) -> DedupMemory:
    return DedupMemory(n, _bytes_per_id(MemoryDedupStore, n), _bytes_per_id(_Baseline, n))
