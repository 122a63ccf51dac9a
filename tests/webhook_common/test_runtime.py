from __future__ import annotations

import asyncio
import gc

from webhook_common.runtime import run, server_heap


def test_server_heap_freezes_and_restores() -> None:
    before = gc.get_threshold()
    with server_heap(12_345):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_run_returns_the_coroutine_result_on_a_fresh_loop() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run(answer()) == 42
