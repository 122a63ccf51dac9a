"""Scenarios 6 and 7: scenario 1 (a private Kafka stopped under load, then restarted)
with the gateway's durable spool enabled.

6: every request must be answered 202, none 503; after the restart every acknowledged id
must be in Kafka exactly once and delivered once.
7: the spool sits on a filesystem far too small for the outage, so the disk fills while
Kafka is down: the requests that could not be journaled must be 503 (never 202), and
every 202 must still be in Kafka once and delivered once."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from faults.procs import Gateway, LocalService
from faults.reconcile import Result, drop_table, reconcile, table_ids
from faults.scenarios import (
    Env,
    Profile,
    config,
    kafka_port_pair,
    outage_note,
    settle,
    stack,
    target,
    traffic,
)


async def spool_status(gateway: Gateway) -> dict[str, Any]:
    """The ``spool`` part of the gateway's ``/readyz`` ({} when it cannot be read)."""
    async with httpx.AsyncClient(timeout=5) as client:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get(gateway.admin_url + "/readyz")
            spool = r.json().get("spool")
            return spool if isinstance(spool, dict) else {}
    return {}


# Scenario 7's filesystem: two 64 KiB segments' worth, a few seconds of the load.
SMALL_FS_BYTES = 160 * 1024
SMALL_SEGMENT_BYTES = 64 * 1024


@contextlib.contextmanager
def small_filesystem(path: Path, size: int) -> Any:
    """A size-limited tmpfs at ``path`` (root only), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # noqa: S603 (fixed arguments)
        ["/usr/bin/mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["/usr/bin/umount", "-l", str(path)], check=False)  # noqa: S603


async def durable_spool(env: Env, profile: Profile) -> Result:
    return await _spool_scenario(env, profile, "6 Kafka stopped, spool enabled", disk_full=False)


async def spool_disk_full(env: Env, profile: Profile) -> Result:
    return await _spool_scenario(env, profile, "7 Kafka stopped, spool disk fills", disk_full=True)


async def _spool_scenario(env: Env, profile: Profile, name: str, *, disk_full: bool) -> Result:
    port = kafka_port_pair(24000, 27000)  # apart from scenario 1's range
    kafka = LocalService("kafka", port, env.path("kafka-private-spool"))
    table = f"faults_{uuid.uuid4().hex[:10]}"
    try:
        await kafka.up()  # inside: a failed `up` may still have started the broker
        async with target() as hook:
            raw = f"faults.raw.{uuid.uuid4().hex[:10]}"
            cfg = config(
                env,
                f"127.0.0.1:{port}",
                raw,
                f"faults.dlq.{uuid.uuid4().hex[:10]}",
                sinks={
                    "pg": {"type": "postgres", "dsn": env.database_url, "table": table},
                    "hook": {"type": "http", "url": hook.url},
                },
            )
            spool_dir = env.path(f"s6-spool-{uuid.uuid4().hex[:6]}")
            cfg["gateway"]["spool"] = {
                "enabled": True,
                "path": str(spool_dir / "journal"),
                "max_bytes": 256 * 1024 * 1024,
            }
            fs: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if disk_full:
                cfg["gateway"]["spool"]["segment_bytes"] = SMALL_SEGMENT_BYTES
                fs = small_filesystem(spool_dir, SMALL_FS_BYTES)
            with fs:
                async with stack(env, "s7" if disk_full else "s6", cfg) as s:
                    gw, _ = await s.start()
                    seconds = profile.before + profile.kafka_outage + profile.after + 40
                    load = traffic(env, gw, profile, seconds)
                    load.start()
                    await asyncio.sleep(profile.before)
                    await kafka.down()
                    load.phase("outage")
                    peak = 0
                    outage_ends = time.monotonic() + profile.kafka_outage
                    while time.monotonic() < outage_ends:
                        peak = max(peak, int((await spool_status(gw)).get("records", 0)))
                        await asyncio.sleep(1.0)
                    load.phase("recovery")
                    await kafka.up()
                    restarted = time.monotonic()
                    drained_after: float | None = None
                    while time.monotonic() - restarted < profile.settle:
                        status = await spool_status(gw)
                        if status.get("records") == 0:
                            drained_after = time.monotonic() - restarted
                            break
                        peak = max(peak, int(status.get("records", 0)))
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(profile.after)
                    tally = await load.stop()
                    outage = load.during.get("outage")

                    async def rows() -> Counter[str]:
                        return await table_ids(env.database_url, table)

                    kafka_ids = await settle(s, tally, rows, profile)
                    result = reconcile(name, tally, kafka_ids, await rows(), hook.delivered)
        if outage is not None:
            result.notes.append(outage_note(outage))
            if not outage.statuses[202]:
                result.failures.append("nothing was accepted while Kafka was down")
        result.notes.append(
            f"spool backlog peak {peak} record(s); drained "
            + (f"{drained_after:.1f} s after the restart" if drained_after is not None else "-")
        )
        if drained_after is None:
            result.failures.append("the spool did not drain after Kafka returned")
        if disk_full:
            if not tally.unavailable:
                result.failures.append("no request was refused: the spool's disk never filled")
            if tally.other:
                result.failures.append(f"{tally.other} answered neither 202 nor 503")
        elif tally.unavailable or tally.other:
            result.failures.append(
                f"{tally.unavailable} answered 503 and {tally.other} other: expected only 202"
            )
        return result
    finally:
        await kafka.down()
        with contextlib.suppress(Exception):
            await drop_table(env.database_url, table)
