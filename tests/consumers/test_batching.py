import asyncio

from consumers.batching import Batcher


async def test_batcher_gathers_concurrent_calls_into_few_batches() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=40)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(100)))
    assert results == [i * 2 for i in range(100)]
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert len(batches) == 3  # 40 + 40 + 20, not 100 round trips
    assert max(len(b) for b in batches) == 40


async def test_batcher_failure_reaches_every_caller_of_that_batch_only() -> None:
    calls = 0

    async def run(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return items

    batcher: Batcher[int, int] = Batcher(run, max_batch=10)
    first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await batcher.submit(7) == 7
