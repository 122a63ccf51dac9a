"""The fault scenarios. Each starts its own processes on loopback, drives traffic,
injects its fault, waits (bounded) for the system to settle and returns a
:class:`~faults.reconcile.Result` row. Faults that stop a service stop a private
instance started for the scenario, never the shared one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from consumers.sinks.http import idempotency_key
from faults.procs import (
    Consumer,
    FaultError,
    Gateway,
    LocalService,
    run_cli,
    wait_for,
    write_yaml,
)
from faults.reconcile import (
    Result,
    SinkCount,
    drop_table,
    jsonl_ids,
    reconcile,
    reconcile_sinks,
    table_ids,
    topic_ids,
)
from faults.target import Target
from faults.traffic import Tally, Traffic


@dataclass(frozen=True)
class Profile:
    """Durations (seconds) and load. ``FULL`` is ``make faults``; ``SHORT`` runs in
    ``make test``."""

    name: str
    rate: float  # requests per second over all senders
    workers: int
    before: float  # load before the fault
    kafka_outage: float
    after: float  # load after recovery
    consumer_kills: int
    kill_interval: float
    sink_down: float
    dlq_events: int
    redis_outage: float
    large_events: int  # bodies at the source's body_limit (scenario 9)
    settle: float  # most time to wait for every acked id to be delivered


FULL = Profile(
    name="full",
    rate=150.0,
    workers=12,
    before=8.0,
    kafka_outage=20.0,
    after=8.0,
    consumer_kills=3,
    kill_interval=4.0,
    sink_down=600.0,  # ten minutes: longer than any retry policy, on the shipped one
    dlq_events=300,
    redis_outage=15.0,
    large_events=30,
    settle=180.0,
)

SHORT = replace(
    FULL,
    name="short",
    rate=60.0,
    workers=6,
    before=2.0,
    kafka_outage=5.0,
    after=2.0,
    consumer_kills=1,
    kill_interval=2.0,
    sink_down=5.0,
    dlq_events=40,
    redis_outage=4.0,
    large_events=4,
    settle=90.0,
)


@dataclass
class Env:
    """Where a run writes and which shared services it may use (never stop these)."""

    run_dir: Path
    kafka_bootstrap: str
    redis_url: str
    database_url: str
    secret: str = field(default_factory=lambda: "faults-" + uuid.uuid4().hex)

    def path(self, name: str) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir.resolve() / name


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def http_sink(hook: Target) -> dict[str, dict[str, Any]]:
    """The ``sinks`` of a scenario whose only sink is the counting target ``hook``."""
    return {"hook": {"type": "http", "url": hook.url}}


def config(
    env: Env,
    bootstrap: str | None = None,
    raw: str | None = None,
    dlq: str | None = None,
    *,
    sinks: dict[str, dict[str, Any]],
    redis_url: str | None = None,
    retry: dict[str, Any] | None = None,
    ack_timeout: float = 2.0,
    group: str | None = None,
) -> dict[str, Any]:
    """The shared YAML document of one scenario (gateway and consumer sections): on
    the shared Kafka and fresh topics unless told otherwise."""
    bootstrap = bootstrap or env.kafka_bootstrap
    raw = raw or f"faults.raw.{_uid()}"
    dlq = dlq or f"faults.dlq.{_uid()}"
    return {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": [
            {"name": raw, "partitions": 3, "replication_factor": 1},
            {"name": dlq, "partitions": 1, "replication_factor": 1},
        ],
        "gateway": {
            "producer": {"ack_timeout_seconds": ack_timeout, "linger_ms": 2},
            "shutdown_grace_seconds": 15,
            "log_format": "text",
        },
        "sources": [
            {
                "name": "crystallize",
                "path": "/webhooks/crystallize",
                "verifier": {"type": "crystallize", "mode": "hmac"},
                "secrets": ["${FAULTS_SIGNATURE_SECRET}"],
                "topic": raw,
            }
        ],
        "consumers": {
            "group": group or f"faults-{_uid()}",
            "topics": [raw],
            "dlq_topic": dlq,
            "dedup": {
                "store": "redis",
                "redis_url": redis_url or env.redis_url,
                "key_prefix": f"faults:{_uid()}:",
            },
            "sinks": sinks,
            "routes": [{"name": "all", "sinks": list(sinks)}],
            # The shipped retry policy unless a scenario names one: faults prove the
            # defaults, not a tuning.
            **({"retry": retry} if retry else {}),
            "commit_interval_ms": 500,
            "shutdown_grace_seconds": 10,
        },
    }


class Stack:
    """The processes of one scenario; :meth:`close` stops all of them."""

    def __init__(self, env: Env, name: str, cfg: dict[str, Any]) -> None:
        self.env = env
        self.name = name
        self.cfg = cfg
        self.config_path = write_yaml(env.path(f"{name}.yaml"), cfg)
        self.proc_env = {"FAULTS_SIGNATURE_SECRET": env.secret}
        self.gateway: Gateway | None = None
        self.consumers: list[Consumer] = []
        self._n = 0

    @property
    def bootstrap(self) -> str:
        return str(self.cfg["kafka"]["bootstrap_servers"])

    @property
    def raw_topic(self) -> str:
        return str(self.cfg["consumers"]["topics"][0])

    async def create_topics(self) -> None:
        code, out = await run_cli(
            ["-m", "gateway", "topics", "create", "--config", str(self.config_path)],
            self.env.path(f"{self.name}.topics.log"),
            self.proc_env,
        )
        if code != 0:
            raise FaultError(f"topics create failed ({code}): {out}")

    async def start_gateway(self) -> Gateway:
        self.gateway = Gateway(
            self.config_path, self.env.path(f"{self.name}.gateway.log"), self.proc_env
        )
        self.gateway.start()
        await self.gateway.wait_ready()
        return self.gateway

    async def start_consumer(self, wait: bool = True) -> Consumer:
        self._n += 1
        consumer = Consumer(
            self.config_path, self.env.path(f"{self.name}.consumer{self._n}.log"), self.proc_env
        )
        consumer.start()
        self.consumers.append(consumer)
        if wait:
            await consumer.wait_ready()
        return consumer

    async def start(self, consumers: int = 1) -> tuple[Gateway, list[Consumer]]:
        """The gateway and ``consumers`` consumers, started at once (each waited for)."""
        gw, *started = await asyncio.gather(
            self.start_gateway(), *(self.start_consumer() for _ in range(consumers))
        )
        assert isinstance(gw, Gateway)
        return gw, [c for c in started if isinstance(c, Consumer)]

    async def close(self) -> None:
        procs: list[Gateway | Consumer] = [*self.consumers]
        if self.gateway is not None:
            procs.append(self.gateway)
        await asyncio.gather(*(p.stop(20) for p in procs), return_exceptions=True)

    async def delete_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        with contextlib.suppress(Exception):
            await admin.start()
            await admin.delete_topics([t["name"] for t in self.cfg["topics"]])
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.asynccontextmanager
async def stack(env: Env, name: str, cfg: dict[str, Any]) -> AsyncIterator[Stack]:
    s = Stack(env, name, cfg)
    try:
        await s.create_topics()
        yield s
    finally:
        await s.close()
        await s.delete_topics()


@contextlib.asynccontextmanager
async def target() -> AsyncIterator[Target]:
    t = Target().start()
    try:
        yield t
    finally:
        t.stop()


def traffic(env: Env, gateway: Gateway, profile: Profile, seconds: float) -> Traffic:
    return Traffic(
        gateway.url + "/webhooks/crystallize",
        env.secret,
        workers=profile.workers,
        rate=profile.rate,
        max_requests=int(profile.rate * seconds * 1.5) + 100,
    )


async def all_delivered(
    acked: list[str], delivered: Callable[[], Awaitable[Counter[str]] | Counter[str]], within: float
) -> None:
    want = set(acked)

    async def done() -> bool:
        got = delivered()
        counts = await got if not isinstance(got, Counter) else got
        return want <= set(counts)

    # On timeout, reconciliation reports what is missing.
    with contextlib.suppress(FaultError):
        await wait_for(done, within, f"all {len(want)} acknowledged events to be delivered")


async def settle(
    s: Stack,
    tally: Tally,
    delivered: Callable[[], Awaitable[Counter[str]] | Counter[str]],
    profile: Profile,
    within: float | None = None,
) -> Counter[str]:
    """Wait (bounded: ``within``, default ``profile.settle``) until every acked id was
    delivered, and a little longer for late duplicates; then how often each id is in
    the scenario's raw topic."""
    await all_delivered(tally.acked, delivered, within or profile.settle)
    await asyncio.sleep(2)  # late duplicates, if any, arrive now
    return await topic_ids(s.bootstrap, s.raw_topic, expect=len(tally.acked))


def kafka_port_pair(first: int = 19192, end: int = 23192) -> int:
    """A free port in ``[first, end)`` whose successor (the KRaft controller port) is
    free too, below the ephemeral range: the broker is restarted, and meanwhile an
    ephemeral port (a client's outgoing connection) could take a port picked from that
    range. Scenarios that run a private broker use disjoint ranges."""
    # Start at a place that depends on the process, so two runs at once (make faults
    # and make test) do not both pick a port the other's broker is restarting on.
    start = first + 2 * (os.getpid() % ((end - first) // 2))
    ports: list[int] = [*range(start, end, 2), *range(first, start, 2)]
    for port in ports:
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise FaultError(f"no free pair of ports for a private Kafka in {first}-{end - 1}")


def outage_note(outage: Tally) -> str:
    """What the senders saw while the broker was down."""
    return (
        f"while Kafka was down: {outage.sent} sent, {outage.statuses[202]} answered 202, "
        f"{outage.unavailable} answered 503, {outage.other} other"
    )


def _redis_port() -> int:
    """A free port below the ephemeral range (Redis is restarted on it)."""
    start = 16399 + os.getpid() % 2000
    ports: list[int] = [*range(start, 19191), *range(16399, start)]
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise FaultError("no free port for a private Redis in 16399-19190")


# --- 1. Kafka stopped under load -------------------------------------------------


async def kafka_outage(env: Env, profile: Profile) -> Result:
    name = "1 Kafka stopped, restarted"
    port = kafka_port_pair()
    kafka = LocalService("kafka", port, env.path("kafka-private"))
    table = f"faults_{_uid()}"
    await kafka.up()
    try:
        async with target() as hook:
            raw = f"faults.raw.{_uid()}"
            cfg = config(
                env,
                f"127.0.0.1:{port}",
                raw,
                f"faults.dlq.{_uid()}",
                sinks={
                    "pg": {"type": "postgres", "dsn": env.database_url, "table": table},
                    "hook": {"type": "http", "url": hook.url},
                },
            )
            async with stack(env, "s1", cfg) as s:
                gw, _ = await s.start()
                seconds = profile.before + profile.kafka_outage + profile.after + 40
                load = traffic(env, gw, profile, seconds)
                load.start()
                await asyncio.sleep(profile.before)
                await kafka.down()
                load.phase("outage")  # from here on the broker is gone
                await asyncio.sleep(profile.kafka_outage)
                load.phase("recovery")
                await kafka.up()
                await asyncio.sleep(profile.after)
                tally = await load.stop()
                outage = load.during.get("outage")

                async def rows() -> Counter[str]:
                    return await table_ids(env.database_url, table)

                kafka_ids = await settle(s, tally, rows, profile)
                result = reconcile(name, tally, kafka_ids, await rows(), hook.delivered)
        if outage is not None:
            result.notes.append(outage_note(outage))
            if outage.statuses[202] or not outage.unavailable:
                result.failures.append("requests sent while Kafka was down were not all 503")
        return result
    finally:
        await kafka.down()
        with contextlib.suppress(Exception):
            await drop_table(env.database_url, table)


# --- 2. consumers SIGKILLed under load --------------------------------------------


# Deliveries one consumer runs at once. A SIGKILL can land after a sink accepted a
# delivery and before its dedup mark was written; a sink that cannot tell it already
# holds the event (http) then gets it again, so its duplicates are bounded by
# kills x this (at-least-once; see docs/reliability.md).
KILL_PARALLEL = 10


async def consumer_kills(env: Env, profile: Profile) -> Result:
    name = f"2 consumer SIGKILL x{profile.consumer_kills} (2 consumers)"
    table = f"faults_{_uid()}"
    events_file = env.path(f"s2-events-{_uid()}.jsonl")
    try:
        async with target() as hook:
            cfg = config(
                env,
                env.kafka_bootstrap,
                f"faults.raw.{_uid()}",
                f"faults.dlq.{_uid()}",
                sinks={
                    "pg": {"type": "postgres", "dsn": env.database_url, "table": table},
                    # Both consumers append to one file, as a shared volume would.
                    "file": {"type": "file", "path": str(events_file)},
                    "hook": {"type": "http", "url": hook.url},
                },
            )
            cfg["consumers"]["concurrency"] = {"max_parallel": KILL_PARALLEL}
            async with stack(env, "s2", cfg) as s:
                gw, (victim, _) = await s.start(consumers=2)
                seconds = profile.before + profile.consumer_kills * profile.kill_interval + 40
                load = traffic(env, gw, profile, seconds)
                load.start()
                await asyncio.sleep(profile.before)
                for _ in range(profile.consumer_kills):
                    victim.signal(signal.SIGKILL)
                    await victim.wait(10)
                    victim = await s.start_consumer()
                    await asyncio.sleep(profile.kill_interval)
                tally = await load.stop()

                async def everywhere() -> Counter[str]:
                    rows = await table_ids(env.database_url, table)
                    return rows & jsonl_ids(events_file)[0] & hook.delivered

                kafka_ids = await settle(s, tally, everywhere, profile)
                lines, torn = jsonl_ids(events_file)
                # What a receiver deduplicating on Idempotency-Key sees, per event id.
                per_key = hook.per_key
                keyed = Counter({i: per_key[idempotency_key(i) or ""] for i in tally.acked})
                bound = profile.consumer_kills * KILL_PARALLEL
                result = reconcile_sinks(
                    name,
                    tally,
                    kafka_ids,
                    [
                        SinkCount("pg", await table_ids(env.database_url, table), "rows per id"),
                        SinkCount("file", lines, "lines per id"),
                        SinkCount("hook", keyed, "requests per Idempotency-Key", bound),
                    ],
                )
        result.notes.append(
            f"consumer processes started: {len(s.consumers)}; http duplicates "
            f"{result.sinks[2].duplicates} (bound: {profile.consumer_kills} kills x "
            f"{KILL_PARALLEL} deliveries in flight = {bound}; receivers dedupe by "
            "Idempotency-Key); postgres and file must hold each event once"
        )
        if torn:
            result.notes.append(f"file: {torn} line(s) that are not an event (torn writes)")
        return result
    finally:
        with contextlib.suppress(Exception):
            await drop_table(env.database_url, table)


# --- 3. a sink down, then a sink that keeps failing (DLQ, replay) ----------------


async def dead_lettered(s: Stack, tally: Tally) -> int:
    """How many acked ids are in the scenario's dead-letter topic."""
    ids = await topic_ids(s.bootstrap, s.cfg["consumers"]["dlq_topic"], expect=0, within=3)
    return sum(1 for i in set(tally.acked) if ids[i])


async def sink_down(env: Env, profile: Profile) -> Result:
    """The sink answers 503 to everything for ``sink_down`` seconds (ten minutes in the
    full profile), on the shipped retry policy: events wait in Kafka while the sink's
    circuit is open, and all are delivered once it is back; none dead-lettered."""
    name = f"3a sink down {profile.sink_down:g} s"
    async with target() as hook:
        cfg = config(env, sinks=http_sink(hook))
        async with stack(env, "s3a", cfg) as s:
            gw, _ = await s.start()
            load = traffic(env, gw, profile, profile.before * 2 + profile.sink_down)
            load.start()
            await asyncio.sleep(profile.before)
            hook.status = 503
            await asyncio.sleep(profile.sink_down)
            refused = hook.refused
            hook.status = 200
            await asyncio.sleep(profile.before)
            tally = await load.stop()
            # The outage's backlog (the whole load of `sink_down` seconds) is delivered
            # afterwards: allow as long again as the outage lasted.
            back = time.monotonic()
            kafka_ids = await settle(
                s, tally, lambda: hook.delivered, profile, profile.settle + profile.sink_down
            )
            caught_up = time.monotonic() - back
            result = reconcile(name, tally, kafka_ids, Counter(hook.delivered))
            result.dead_lettered = await dead_lettered(s, tally)
            result.notes.append(f"deliveries refused by the sink while down: {refused}")
            result.notes.append(
                f"backlog of {len(tally.acked)} event(s) delivered {caught_up:.0f} s after the "
                "load stopped"
            )
            if not refused:
                result.failures.append("the sink was never called while down")
            if result.dead_lettered:
                result.failures.append(
                    f"{result.dead_lettered} event(s) dead-lettered by a sink outage"
                )
            return result


async def sink_dlq_replay(env: Env, profile: Profile) -> Result:
    # The sink refuses every event for good (422: a permanent failure, dead-lettered at
    # once on the shipped policy); a 5xx for everything is an outage, held instead (3a).
    name = "3b sink refusing -> DLQ -> replay"
    async with target() as hook:
        hook.status = 422
        raw, dlq = f"faults.raw.{_uid()}", f"faults.dlq.{_uid()}"
        cfg = config(
            env,
            env.kafka_bootstrap,
            raw,
            dlq,
            sinks=http_sink(hook),
        )
        async with stack(env, "s3b", cfg) as s:
            gw, _ = await s.start()
            load = traffic(env, gw, profile, 60)
            load.max_requests = profile.dlq_events
            load.start()
            await wait_for(
                lambda: load.tally.sent >= profile.dlq_events, 60, "the DLQ events to be sent"
            )
            tally = await load.stop()
            acked = len(tally.acked)

            async def dlq_full() -> bool:
                ids = await topic_ids(s.bootstrap, dlq, expect=acked, within=3)
                return set(tally.acked) <= set(ids)

            await wait_for(dlq_full, profile.settle, "every event to be dead-lettered")
            dead = await topic_ids(s.bootstrap, dlq, expect=acked)
            await s.close()  # the consumer stops; the replay alone delivers
            hook.status = 200
            code, out = await run_cli(
                [
                    *("-m", "consumers", "replay", "--config", str(s.config_path)),
                    *("--from-dlq", "--sinks", "hook"),
                ],
                env.path("s3b.replay.log"),
                s.proc_env,
                within=profile.settle,
            )
            kafka_ids = await topic_ids(s.bootstrap, raw, expect=acked)
            result = reconcile(name, tally, kafka_ids, Counter(hook.delivered))
            in_dlq = sum(1 for i in set(tally.acked) if dead[i])
            result.notes.append(f"dead-lettered {in_dlq} of {acked}; replay said: {out.strip()}")
            if code != 0:
                result.failures.append(f"replay exited {code}")
            if in_dlq != acked:
                result.failures.append(f"only {in_dlq} of {acked} acked events reached the DLQ")
            return result


# --- 4. gateway SIGTERM under load -------------------------------------------------


async def gateway_sigterm(env: Env, profile: Profile) -> Result:
    name = "4 gateway SIGTERM under load"
    async with target() as hook:
        cfg = config(env, sinks=http_sink(hook))
        async with stack(env, "s4", cfg) as s:
            gw, _ = await s.start()
            load = traffic(env, gw, profile, profile.before + 30)
            load.start()
            await asyncio.sleep(profile.before)
            gw.signal(signal.SIGTERM)
            code = await gw.wait(30)
            await asyncio.sleep(0.5)  # senders now meet a closed port
            tally = await load.stop()
            kafka_ids = await settle(s, tally, lambda: hook.delivered, profile)
            result = reconcile(name, tally, kafka_ids, Counter(hook.delivered))
            result.notes.append(
                f"gateway exit status {code}; refused afterwards: {dict(tally.errors)}"
            )
            if code != 0:
                result.failures.append(f"gateway exited {code} on SIGTERM")
            return result


# --- 5. Redis unavailable to the consumers -----------------------------------------


async def redis_outage(env: Env, profile: Profile) -> Result:
    name = f"5 Redis down {profile.redis_outage:g} s"
    redis = LocalService("redis", _redis_port(), env.path("redis-private"))
    await redis.up()
    try:
        async with target() as hook:
            cfg = config(
                env,
                env.kafka_bootstrap,
                f"faults.raw.{_uid()}",
                f"faults.dlq.{_uid()}",
                sinks=http_sink(hook),
                redis_url=f"redis://127.0.0.1:{redis.port}/0",
            )
            async with stack(env, "s5", cfg) as s:
                gw, _ = await s.start()
                load = traffic(env, gw, profile, profile.before * 2 + profile.redis_outage + 30)
                load.start()
                await asyncio.sleep(profile.before)
                await redis.down()
                # Deliveries already past their dedup check may still finish.
                await asyncio.sleep(1.0)
                stalled_at = sum(hook.delivered.values())
                started = time.monotonic()
                await asyncio.sleep(max(0.0, profile.redis_outage - 1.0))
                during = sum(hook.delivered.values()) - stalled_at
                await redis.up()
                outage = time.monotonic() - started
                await asyncio.sleep(profile.before)
                tally = await load.stop()
                kafka_ids = await settle(s, tally, lambda: hook.delivered, profile)
                result = reconcile(name, tally, kafka_ids, Counter(hook.delivered))
                result.notes.append(
                    f"deliveries while Redis was down (after a 1 s grace): {during} "
                    f"in {outage:.0f} s"
                )
                if during:
                    result.failures.append("deliveries continued without the dedup store")
                return result
    finally:
        await redis.down()


# --- 6, 7. Kafka stopped with the durable spool enabled (faults/spool_scenario.py) ----


async def durable_spool(env: Env, profile: Profile) -> Result:
    # Imported here: that module builds on this one.
    from faults.spool_scenario import durable_spool as scenario

    return await scenario(env, profile)


async def spool_disk_full(env: Env, profile: Profile) -> Result:
    from faults.spool_scenario import spool_disk_full as scenario

    return await scenario(env, profile)


# --- 8. spooled records for a deleted topic (faults/unproducible_scenario.py)


async def unproducible_in_spool(env: Env, profile: Profile) -> Result:
    from faults.unproducible_scenario import unproducible_in_spool as scenario

    return await scenario(env, profile)


# --- 9. events at body_limit that the sink refuses for good (faults/large_scenario.py)


async def large_refused(env: Env, profile: Profile) -> Result:
    from faults.large_scenario import large_refused as scenario

    return await scenario(env, profile)


# --- 10. connections held idle by a blank line (faults/idle_scenario.py) ------------


async def crlf_idle_connections(env: Env, profile: Profile) -> Result:
    from faults.idle_scenario import crlf_idle_connections as scenario

    return await scenario(env, profile)


SCENARIOS: dict[str, Callable[[Env, Profile], Awaitable[Result]]] = {
    "1": kafka_outage,
    "2": consumer_kills,
    "3a": sink_down,
    "3b": sink_dlq_replay,
    "4": gateway_sigterm,
    "5": redis_outage,
    "6": durable_spool,
    "7": spool_disk_full,
    "8": unproducible_in_spool,
    "9": large_refused,
    "10": crlf_idle_connections,
}
