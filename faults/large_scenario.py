"""Scenario 9: events at the source's ``body_limit`` that the sink refuses for good,
among ordinary traffic for the same keys.

Each large record is as big as the raw topic takes; its dead letter adds headers. On
the shipped sizes (``topics create`` sizes every topic, the dead-letter producer takes
``consumers.max_record_bytes``) it is dead-lettered byte for byte, and the ordinary
events behind it in the same partitions are delivered: one large event with a permanent
failure must never hold its partition. A dead letter the DLQ still cannot take would be
written as a ``too_large`` reference; the scenario counts either as dead-lettered."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson

from faults.reconcile import Result, read_topic, reconcile
from faults.scenarios import Env, Profile, _uid, config, http_sink, settle, stack, target, traffic
from faults.traffic import SIGNATURE_HEADER, Tally
from gateway.config import MiB  # noqa: TID251 (the runner sizes bodies as the gateway does)
from gateway.verifiers.crystallize import sign_hmac  # noqa: TID251
from webhook_common.contract import H_ID

# The default `sources[].body_limit`: the scenario runs on shipped sizes.
BODY_LIMIT = MiB
# The sink takes what ordinary traffic sends and refuses anything near the limit.
REFUSE_OVER = 64 * 1024


def large_body(run: str, n: int, key: str, size: int = BODY_LIMIT) -> bytes:
    """A Crystallize-shaped body of exactly ``size`` bytes for entity ``key``."""
    head = orjson.dumps({"order": {"get": {"id": key}}, "run": run, "n": n, "pad": ""})
    pad = size - len(head)
    return head[:-2] + b"x" * pad + head[-2:]


@dataclass
class DeadLetters:
    """What the dead-letter topic holds for a run: copies per event id, the reason of
    each, and the size of each full copy's value."""

    ids: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    value_bytes: dict[str, int] = field(default_factory=dict)


async def read_dead_letters(bootstrap: str, topic: str, expect: int) -> DeadLetters:
    out = DeadLetters()
    for record in await read_topic(bootstrap, topic, expect, within=10):
        headers = dict(record.headers)
        reason = (headers.get("dlq_reason") or b"").decode()
        out.reasons[reason] += 1
        if ce_id := headers.get(H_ID):
            out.ids[ce_id.decode()] += 1
            out.value_bytes[ce_id.decode()] = len(record.value or b"")
        else:  # a `too_large` reference: the id is in its value
            ref = orjson.loads(record.value or b"{}")
            out.ids[str(ref.get("event_id"))] += 1
    return out


async def _send_large(url: str, secret: str, count: int, tally: Tally, spread: float) -> None:
    run = _uid()
    async with httpx.AsyncClient(timeout=60.0) as client:
        for n in range(count):
            body = large_body(run, n, f"order-{n % 50}")  # the keys ordinary traffic uses
            headers = {
                SIGNATURE_HEADER: sign_hmac(secret, body),
                "content-type": "application/json",
            }
            tally.sent += 1
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                tally.errors[type(exc).__name__] += 1
            else:
                tally.statuses[r.status_code] += 1
                if r.status_code == 202:
                    tally.acked.append(r.json()["id"])
            await asyncio.sleep(spread)


async def large_refused(env: Env, profile: Profile) -> Result:
    name = "9 body_limit events, sink refuses"
    async with target() as hook:
        hook.refuse_over = REFUSE_OVER
        raw, dlq = f"faults.raw.{_uid()}", f"faults.dlq.{_uid()}"
        cfg = config(env, env.kafka_bootstrap, raw, dlq, sinks=http_sink(hook))
        async with stack(env, "s9", cfg) as s:
            gw, _ = await s.start()
            seconds = profile.before * 2
            load = traffic(env, gw, profile, seconds)
            load.start()
            large = Tally()
            await _send_large(
                gw.url + "/webhooks/crystallize",
                env.secret,
                profile.large_events,
                large,
                seconds / profile.large_events,
            )
            small = await load.stop()
            tally = Tally(
                sent=small.sent + large.sent,
                acked=small.acked + large.acked,
                statuses=small.statuses + large.statuses,
                errors=small.errors + large.errors,
            )
            big = set(large.acked)
            dead = DeadLetters()

            async def reached() -> Counter[str]:
                nonlocal dead
                dead = await read_dead_letters(s.bootstrap, dlq, len(big))
                return hook.delivered + Counter({i: 1 for i in big if dead.ids[i]})

            kafka_ids = await settle(s, tally, reached, profile)
            delivered = await reached()
            result = reconcile(name, tally, kafka_ids, delivered)
            result.delivered = sum(1 for i in set(small.acked) if hook.delivered[i])
            result.dead_lettered = sum(1 for i in set(tally.acked) if dead.ids[i])
            full = [i for i in big if dead.value_bytes.get(i) == BODY_LIMIT]
            result.notes.append(
                f"large events: {large.sent} sent, {len(big)} acked, "
                f"{result.dead_lettered} dead-lettered ({len(full)} byte for byte, "
                f"reasons {dict(dead.reasons)}); ordinary events: {len(small.acked)} acked, "
                f"{result.delivered} delivered"
            )
            if not big:
                result.failures.append("no large event was acknowledged")
            if wrong := [i for i in set(small.acked) if dead.ids[i]]:
                result.failures.append(f"{len(wrong)} ordinary event(s) dead-lettered")
            if missing := [i for i in big if not dead.ids[i]]:
                result.failures.append(f"{len(missing)} large event(s) not dead-lettered")
            if extra := sum(n - 1 for i, n in dead.ids.items() if i in big and n > 1):
                result.failures.append(f"{extra} large event(s) dead-lettered twice")
            return result
