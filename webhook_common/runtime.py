"""Process runtime shared by ``python -m gateway`` and ``python -m consumers``: the event
loop they run on and how the garbage collector is set for a long-running server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (``uvicorn[standard]`` brings it): its tasks,
    futures and callbacks cost a fraction of the pure-Python loop's, and both sides
    make several of each per webhook."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@contextlib.contextmanager
def server_heap(young_threshold: int) -> Iterator[None]:
    """Enter once everything long-lived is built, before the first request or event.

    Freezing moves the start-up objects (modules, FastAPI and pydantic models, clients)
    out of the cyclic collector's sight for good: a full collection then walks only what
    work allocates, ~20 ms less each, which otherwise lands on the latency of whatever is
    waiting. Work frees almost everything by reference counting, so the young generation
    can be large: with the default 700 the collector ran thousands of times per
    benchmark run (docs/benchmarks.md). What is eventually collected does not change.
    On exit the previous state is restored (tests and embedders run servers repeatedly).
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *thresholds[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
