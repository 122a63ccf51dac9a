"""Scenario 8: records in the spool that Kafka will never take, among records it will.

Two sources, two topics, spool enabled, on a private broker. Kafka is stopped under
load, so both sources' records are journaled (202); the gateway is SIGKILLed with its
journal full. Kafka returns, topic B is deleted, and a new gateway starts on the same
journal. Its drainer must deliver source A's records and set source B's aside (the
``rejected`` file) instead of retrying them ahead of everything for ever; new requests
for B must be 503 at once, never 202; ``/readyz`` must say the topic is missing. Then
topic B is created again and ``python -m gateway spool resend`` produces the set-aside
records: every 202 of both sources is in Kafka and delivered, none lost."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from faults.procs import Gateway, LocalService, run_cli, wait_for
from faults.reconcile import Result, reconcile, topic_ids
from faults.scenarios import Env, Profile, config, http_sink, kafka_port_pair, settle, stack, target
from faults.spool_scenario import spool_status
from faults.traffic import Tally, Traffic


def _merge(*tallies: Tally) -> Tally:
    out = Tally()
    for t in tallies:
        out.sent += t.sent
        out.acked += t.acked
        out.statuses += t.statuses
        out.errors += t.errors
    return out


async def _readyz(admin_url: str) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            r = await client.get(admin_url + "/readyz")
        except httpx.HTTPError as exc:
            return 0, type(exc).__name__
        return r.status_code, r.text


async def unproducible_in_spool(env: Env, profile: Profile) -> Result:
    name = "8 spooled records, topic deleted"
    port = kafka_port_pair(27000, 30000)  # apart from scenarios 1 and 6
    kafka = LocalService("kafka", port, env.path("kafka-private-unproducible"))
    uid = uuid.uuid4().hex[:10]
    raw_a, raw_b = f"faults.raw.{uid}", f"faults.rawb.{uid}"
    try:
        await kafka.up()
        async with target() as hook:
            cfg: dict[str, Any] = config(
                env,
                f"127.0.0.1:{port}",
                raw_a,
                f"faults.dlq.{uid}",
                sinks=http_sink(hook),
            )
            cfg["topics"].append({"name": raw_b, "partitions": 3, "replication_factor": 1})
            source_b = dict(cfg["sources"][0], name="other", path="/webhooks/other", topic=raw_b)
            cfg["sources"].append(source_b)
            cfg["consumers"]["topics"] = [raw_a, raw_b]
            cfg["gateway"]["spool"] = {
                "enabled": True,
                "path": str(env.path(f"s8-spool-{uid}")),
                "max_bytes": 256 * 1024 * 1024,
            }
            async with stack(env, "s8", cfg) as s:

                def load(url: str, seconds: float) -> Traffic:
                    half = max(1, profile.workers // 2)
                    return Traffic(
                        url,
                        env.secret,
                        workers=half,
                        rate=profile.rate / 2,
                        max_requests=int(profile.rate / 2 * seconds * 1.5) + 50,
                    )

                # 1. Both sources spool while Kafka is down; the gateway dies holding them.
                gw = await s.start_gateway()
                a1 = load(gw.url + "/webhooks/crystallize", profile.kafka_outage + 30)
                b1 = load(gw.url + "/webhooks/other", profile.kafka_outage + 30)
                a1.start()
                await asyncio.sleep(profile.before)
                await kafka.down()
                # Only now: every record of B is in the journal, none in the topic that
                # is deleted below (deleting a topic deletes what it holds).
                b1.start()
                await asyncio.sleep(profile.kafka_outage)
                spooled = int((await spool_status(gw)).get("records", 0))
                first = _merge(await a1.stop(), await b1.stop())
                gw.signal(signal.SIGKILL)
                await gw.wait(15)
                acked_b_before = len(b1.tally.acked)

                # 2. Kafka returns without topic B; a new gateway adopts the journal.
                await kafka.up()
                admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap)
                await admin.start()
                try:
                    await admin.delete_topics([raw_b])

                    async def deleted() -> bool:
                        return raw_b not in await admin.list_topics()

                    await wait_for(deleted, 60, f"topic {raw_b} to be deleted")
                finally:
                    await admin.close()
                gw = s.gateway = Gateway(s.config_path, env.path("s8.gateway2.log"), s.proc_env)
                gw.start()

                async def serving() -> bool:
                    code, _ = await _readyz(gw.admin_url)
                    return code in (200, 503)

                await wait_for(serving, 60, "the second gateway's admin port")
                a2 = load(gw.url + "/webhooks/crystallize", profile.after + 30)
                b2 = load(gw.url + "/webhooks/other", profile.after + 30)
                a2.start()
                b2.start()
                started = time.monotonic()
                drained_after: float | None = None
                while time.monotonic() - started < profile.settle:
                    if (await spool_status(gw)).get("records") == 0:
                        drained_after = time.monotonic() - started
                        break
                    await asyncio.sleep(0.5)
                ready_code, ready_text = await _readyz(gw.admin_url)
                await asyncio.sleep(profile.after)
                second_a, second_b = await a2.stop(), await b2.stop()

                # 3. The topic is back; the set-aside records are sent again.
                await s.create_topics()
                code, out = await run_cli(
                    ["-m", "gateway", "spool", "resend", "--config", str(s.config_path)],
                    env.path("s8.resend.log"),
                    s.proc_env,
                    within=profile.settle,
                )
                await s.start_consumer()
                tally = _merge(first, second_a, second_b)
                kafka_a = await settle(s, tally, lambda: hook.delivered, profile)
                kafka_b = await topic_ids(s.bootstrap, raw_b, expect=acked_b_before)
                result = reconcile(name, tally, kafka_a + kafka_b, Counter(hook.delivered))
    finally:
        await kafka.down()
    result.notes.append(
        f"spooled while Kafka was down: {spooled} record(s) ({acked_b_before} acked for the "
        f"deleted topic); drained "
        + (f"{drained_after:.1f} s after the restart" if drained_after is not None else "-")
        + f"; /readyz meanwhile: {ready_code} {ready_text.strip()[:160]}"
    )
    result.notes.append(
        f"requests for the deleted topic after the restart: {dict(second_b.statuses)}; "
        f"for the other source: {dict(second_a.statuses)}"
    )
    result.notes.append(f"spool resend said: {out.strip()}")
    if not acked_b_before:
        result.failures.append("nothing was spooled for the topic that was then deleted")
    if drained_after is None:
        result.failures.append("the spool did not drain: a record for a missing topic held it")
    if second_b.statuses[202]:
        result.failures.append(f"{second_b.statuses[202]} request(s) for a missing topic got 202")
    if not second_a.statuses[202]:
        result.failures.append("the other source got no 202 after the restart")
    if ready_code != 503 or "missing" not in ready_text:
        result.failures.append(f"/readyz did not report the missing topic ({ready_code})")
    if code != 0:
        result.failures.append(f"spool resend exited {code}")
    if "resent 0 " in out:
        result.failures.append("spool resend found nothing set aside")
    return result
