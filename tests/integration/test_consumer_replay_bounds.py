"""``python -m consumers replay --offsets`` on the real broker: a range past what the
partition holds is a clear error at once, never a replay polling forever."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.consumers.harness import ROOT, meta, produce, write_config
from tests.integration.conftest import TopicFactory


async def test_offsets_past_the_high_watermark_are_refused(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw")
    await produce(kafka_bootstrap, raw, [(meta(f"e{i}", "k"), b"{}") for i in range(3)])
    out = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "c.yaml",
        kafka_bootstrap,
        {"topics": [raw], "sinks": {"f": {"type": "file", "path": str(out)}}},
    )
    command = [sys.executable, "-m", "consumers", "--log-format", "text", "replay"]
    res = await asyncio.to_thread(
        subprocess.run,
        [*command, "--config", str(config), "--offsets", "0:1-10", "--sinks", "f"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert res.returncode == 1, res.stderr
    assert (
        f"error: --offsets 0:1-10: {raw}/0 holds offsets 0-2 (log start 0, high watermark 3)"
        in res.stderr
    )
    assert not out.exists() or out.read_bytes() == b""  # nothing delivered
