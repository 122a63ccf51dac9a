"""Relative paths in a config mean the same from any working directory: the gateway and a
consumer started elsewhere (as a container starts them in its WORKDIR, a service manager
in /) find and write their files beside the config file, never in the working directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import yaml

from tests.consumers.harness import read_jsonl, wait_until
from tests.gateway.support import free_port
from tests.integration.conftest import TopicFactory

ROOT = Path(__file__).resolve().parents[2]
SECRET = "relative-paths-secret-0123456789abcdef"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


async def _ready(url: str, proc: asyncio.subprocess.Process, log: Path, within: float) -> None:
    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(within):
        while True:
            if proc.returncode is not None:
                text = await asyncio.to_thread(_tail, log)
                raise AssertionError(f"exited {proc.returncode}:\n{text}")
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


async def test_relative_paths_are_taken_from_the_config_files_directory(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    raw = await kafka_topic("raw", partitions=1)
    dlq = await kafka_topic("dlq", partitions=1)
    conf = tmp_path / "conf"
    conf.mkdir()
    document = {
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "gateway": {"spool": {"enabled": True, "path": "spool"}},
        "sources": [
            {
                "name": "crystallize",
                "verifier": {"type": "crystallize", "mode": "auto"},
                "secrets": ["${SIGNING_SECRET}"],
                "topic": raw,
            }
        ],
        "consumers": {
            "group": f"paths-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {
                "events_file": {"type": "file", "path": "out/events.jsonl", "fsync": "never"},
                # A replay file named relative to this one: must exist where it points.
                "page": {"type": "inspector", "port": 0, "replay_config": "config.yaml"},
            },
            "routes": [{"name": "all", "sinks": ["events_file", "page"]}],
        },
    }
    (conf / "config.yaml").write_text(yaml.safe_dump(document))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = "../conf/config.yaml"  # as typed in `elsewhere`
    # This checkout's code, whatever the working directory (`-m` would otherwise find the
    # installed one).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "SIGNING_SECRET": SECRET, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    port, gateway_admin, consumer_admin = free_port(), free_port(), free_port()
    gateway_log, consumer_log = tmp_path / "gateway.log", tmp_path / "consumer.log"
    python = [sys.executable, "-m"]
    with gateway_log.open("wb") as glog, consumer_log.open("wb") as clog:
        gateway = await asyncio.create_subprocess_exec(
            *python, "gateway", "serve", "--config", config, "--host", "127.0.0.1",
            "--port", str(port), "--admin-port", str(gateway_admin),
            cwd=elsewhere, env=env, stdout=glog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        consumer = await asyncio.create_subprocess_exec(
            *python, "consumers", "run", "--config", config,
            "--admin-port", str(consumer_admin),
            cwd=elsewhere, env=env, stdout=clog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            await _ready(f"http://127.0.0.1:{gateway_admin}", gateway, gateway_log, 60)
            await _ready(f"http://127.0.0.1:{consumer_admin}", consumer, consumer_log, 60)
            sent = await asyncio.to_thread(
                subprocess.run,
                [*python, "gateway", "send", "--config", config, "--example", "order",
                 "--url", f"http://127.0.0.1:{port}"],
                cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert sent.stdout.startswith("202  id="), sent.stdout + sent.stderr
            event_id = sent.stdout.split("id=", 1)[1].split()[0]
            events = conf / "out" / "events.jsonl"
            try:
                await wait_until(
                    lambda: any(line["id"] == event_id for line in read_jsonl(events)),
                    30,
                    f"{event_id} in {events}",
                )
            except AssertionError as exc:
                text = await asyncio.to_thread(_tail, consumer_log)
                raise AssertionError(f"{exc}\nconsumer log:\n{text}") from None
        finally:
            for proc in (gateway, consumer):
                if proc.returncode is None:
                    proc.terminate()
            for proc in (gateway, consumer):
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except TimeoutError:
                    proc.kill()
    assert (conf / "spool").is_dir(), sorted(p.name for p in conf.iterdir())
    # Nothing was written relative to the working directory.
    assert list(elsewhere.iterdir()) == []
