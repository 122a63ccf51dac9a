"""Consumer benchmarks: throughput through dedup + routing + sink, the slow sink, and
end-to-end latency from the gateway's acknowledgement to the file sink.

Throughput cases pre-fill a fresh topic with N contract records, start
``python -m consumers run`` on it (a fresh group, so it reads from the start) and time
the sink's output from its first line to its N-th; group join and start-up are outside
that window and reported separately.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench import flame, kafka
from bench.ingress import check_accepts, gateway_config, gateway_target
from bench.memory import DedupMemory, dedup_memory
from bench.payload import signed_requests, write_wrk_requests
from bench.procs import BenchError, Process, free_port, plugin_path, python
from webhook_common.contract import parse_time


@dataclass(frozen=True, slots=True)
class ConsumerPlan:
    events: int  # records per throughput case
    slow_events: int  # records for the slow sink with parallel keys
    serial_events: int  # records for the slow sink one at a time
    slow_keys: int
    slow_delay_ms: float
    e2e_rates: tuple[float, ...]  # open-loop rates of the end-to-end runs, one each
    e2e_seconds: float
    redis_url: str
    timeout: float = 300.0
    profile_seconds: float = 0.0  # py-spy the two dedup cases for this long; 0: skip
    variations: bool = False  # also fsync batch and a narrower / wider in-flight window
    memory_ids: int = 0  # ids for the memory dedup store's bytes per id; 0: skip


@dataclass(frozen=True, slots=True)
class Throughput:
    case: str
    events: int
    events_per_s: float
    startup_s: float  # process start to first delivered event
    cpu_s_per_1k: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class EndToEnd:
    rate: float
    seconds: float
    sent: int
    accepted: int
    delivered: int
    ingress_p50_ms: float
    ingress_p99_ms: float
    from_ack_p50_ms: float
    from_ack_p99_ms: float
    from_receive_p50_ms: float
    from_receive_p99_ms: float
    max_ms: float


@dataclass
class ConsumerResults:
    throughput: list[Throughput] = field(default_factory=list)
    slow_order_ok: bool | None = None
    slow_order_detail: str = ""
    end_to_end: list[EndToEnd] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    dedup_memory: DedupMemory | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "throughput": [asdict(t) for t in self.throughput],
            "slow_order_ok": self.slow_order_ok,
            "slow_order_detail": self.slow_order_detail,
            "end_to_end": [asdict(e) for e in self.end_to_end],
            "profile": self.profile,
            "dedup_memory": asdict(self.dedup_memory) if self.dedup_memory else None,
            "errors": self.errors,
        }


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class LineCounter:
    """Counts lines appended to a file, reading only what is new (cheap to poll)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.count
        # Only whole lines: a line being written is counted on the next poll.
        end = chunk.rfind(b"\n") + 1
        self.count += chunk.count(b"\n", 0, end)
        self.offset += end
        return self.count


def consumer_config(
    path: Path,
    bootstrap: str,
    topic: str,
    sinks: dict[str, dict[str, Any]],
    dedup: dict[str, Any],
    concurrency: dict[str, Any] | None = None,
) -> Path:
    consumers: dict[str, Any] = {
        "group": f"bench-{uuid.uuid4().hex[:10]}",
        "topics": [topic],
        "dlq_topic": f"{topic}.dlq",
        "dedup": dedup,
        "sinks": sinks,
        "routes": [{"name": "everything", "sinks": list(sinks)}],
    }
    if concurrency:
        consumers["concurrency"] = concurrency
    doc = {"kafka": {"bootstrap_servers": bootstrap}, "consumers": consumers}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def consumer_process(workdir: Path, name: str, config: Path, extra_path: Path | None) -> Process:
    argv = python("-m", "consumers", "run", "--config", str(config))
    argv += ["--admin-host", "127.0.0.1", "--admin-port", str(free_port())]
    env = {"PYTHONPATH": str(extra_path)} if extra_path else {}
    return Process(name, argv, workdir / f"{name}.log", env=env)


def time_delivery(
    process: Process,
    output: Path,
    expected: int,
    timeout: float,
    profile: tuple[float, Path] | None = None,
) -> Throughput:
    """Start ``process`` and time its sink output from the first line to ``expected``;
    with ``profile`` = (seconds, file), py-spy it from the first line on (collapsed stacks)."""
    counter = LineCounter(output)
    started = time.perf_counter()
    process.start()
    spy: subprocess.Popen[bytes] | None = None
    try:
        deadline = started + timeout
        first_at = 0.0
        first_count = 0
        cpu_first = 0.0
        while counter.poll() < expected:
            now = time.perf_counter()
            if not first_at and counter.count:
                first_at, first_count, cpu_first = now, counter.count, process.cpu_seconds()
                if profile is not None:
                    spy = flame.start(process.pid, profile[0], "raw", profile[1])
            if now > deadline:
                raise BenchError(
                    f"{process.name}: {counter.count} of {expected} events after {timeout:g} s"
                )
            process.check_alive()
            time.sleep(0.005)
        done_at = time.perf_counter()
        cpu = process.cpu_seconds() - cpu_first
        if spy is not None and profile is not None:
            flame.finish(spy, profile[1], profile[0] + 60)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        process.stop()
    if not first_at:  # everything arrived between two polls
        first_at, first_count = started, 0
    window = max(done_at - first_at, 1e-6)
    delivered = expected - first_count
    return Throughput(
        case=process.name,
        events=expected,
        events_per_s=delivered / window,
        startup_s=first_at - started,
        cpu_s_per_1k=cpu / delivered * 1000 if delivered else float("nan"),
    )


def check_order(path: Path) -> tuple[bool, str]:
    """Every key's offsets must arrive increasing (one partition: offset order is the
    order the records were produced in)."""
    last: dict[str, int] = {}
    out_of_order = duplicates = 0
    for line in path.read_text().splitlines():
        key, offset_text = line.rsplit(" ", 1)
        offset = int(offset_text)
        previous = last.get(key, -1)
        if offset == previous:
            duplicates += 1
        elif offset < previous:
            out_of_order += 1
        last[key] = max(offset, previous)
    ok = out_of_order == 0
    return ok, f"{len(last)} keys, {out_of_order} out of order, {duplicates} repeated"


def _redis_cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def run(plan: ConsumerPlan, workdir: Path, bootstrap: str) -> ConsumerResults:
    results = ConsumerResults()
    workdir.mkdir(parents=True, exist_ok=True)
    topics: list[str] = []
    try:
        for case in (_throughput_cases, _slow_cases, _end_to_end, _memory):
            try:
                case(plan, workdir, bootstrap, topics, results)
            except BenchError as exc:
                results.errors.append(f"{case.__name__.strip('_')}: {exc}")
                _log(f"FAILED {case.__name__}: {exc}")
    finally:
        asyncio.run(kafka.delete_topics(bootstrap, topics))
    return results


def _memory(
    plan: ConsumerPlan, workdir: Path, bootstrap: str, topics: list[str], results: ConsumerResults
) -> None:
    if plan.memory_ids:
        _log(f"memory dedup store: {plan.memory_ids:,} ids, and the OrderedDict baseline")
        results.dedup_memory = dedup_memory(plan.memory_ids)


def _new_topic(bootstrap: str, prefix: str, partitions: int, topics: list[str]) -> str:
    topic = kafka.topic_name(prefix)
    asyncio.run(kafka.create_topics(bootstrap, [topic, f"{topic}.dlq"], partitions))
    topics += [topic, f"{topic}.dlq"]
    return topic


def _throughput_cases(
    plan: ConsumerPlan, workdir: Path, bootstrap: str, topics: list[str], results: ConsumerResults
) -> None:
    topic = _new_topic(bootstrap, "consumers", 6, topics)
    took = asyncio.run(kafka.prefill(bootstrap, topic, plan.events, keys=10_000))
    _log(f"consumers: pre-filled {plan.events} records in {took:.1f} s")
    prefix = f"bench:{uuid.uuid4().hex[:10]}:"
    redis = {"store": "redis", "redis_url": plan.redis_url, "key_prefix": prefix}
    memory = {"store": "memory"}
    # The default window is 5,000 in flight (2,000 per partition); the former default
    # and a wider one show that the window, not CPU, bounds these cases.
    narrow = {"max_in_flight": 1000, "per_partition": 500}
    wide = {"max_in_flight": 10000, "per_partition": 4000, "max_parallel": 1000}
    # (case, dedup section, file sink fsync, concurrency): the goals' two cases with the
    # defaults, then variations that show what bounds them: fsync, the in-flight window.
    cases: list[tuple[str, dict[str, Any], str, dict[str, Any] | None]] = [
        ("dedup memory + file sink", memory, "always", None),
        ("dedup redis + file sink", {**redis, "ttl_seconds": 3600}, "always", None),
    ]
    if plan.variations:
        cases += [
            ("dedup memory + file sink (fsync batch)", memory, "batch", None),
            ("dedup memory + file sink (in-flight 1000)", memory, "always", narrow),
            ("dedup memory + file sink (in-flight 10000)", memory, "always", wide),
            (
                "dedup redis + file sink (in-flight 1000)",
                {**redis, "ttl_seconds": 3600},
                "always",
                narrow,
            ),
        ]
    for index, (name, dedup, fsync, concurrency) in enumerate(cases):
        out = workdir / f"events-{index}.jsonl"
        out.unlink(missing_ok=True)
        sinks = {"events_file": {"type": "file", "path": str(out), "fsync": fsync}}
        config = consumer_config(
            workdir / f"consumer-{index}.yaml", bootstrap, topic, sinks, dedup, concurrency
        )
        raw = workdir / f"profile-consumer-{index}.collapsed.txt"
        profile = (plan.profile_seconds, raw) if plan.profile_seconds > 0 and index < 2 else None
        try:
            t = time_delivery(
                consumer_process(workdir, name, config, None),
                out,
                plan.events,
                plan.timeout,
                profile,
            )
            if profile is not None:
                results.profile[name] = {
                    "seconds": plan.profile_seconds,
                    "collapsed": str(raw),
                    **flame.summarise(raw.read_text()),
                }
        finally:
            if dedup["store"] == "redis":
                _redis_cleanup(plan.redis_url, prefix)
        results.throughput.append(t)
        _log(f"{name}: {t.events_per_s:,.0f} events/s")


def _slow_cases(
    plan: ConsumerPlan, workdir: Path, bootstrap: str, topics: list[str], results: ConsumerResults
) -> None:
    plugins = plugin_path(workdir / "plugins")
    cases = [
        ("slow sink, keys in parallel", plan.slow_events, None),
        ("slow sink, one at a time", plan.serial_events, {"max_parallel": 1}),
    ]
    for name, events, concurrency in cases:
        # A topic holding exactly `events` records: a graceful stop delivers everything
        # fetched, which for one-at-a-time would take 20 ms per record left over.
        topic = _new_topic(bootstrap, "slow", 1, topics)
        asyncio.run(kafka.prefill(bootstrap, topic, events, keys=plan.slow_keys))
        out = workdir / f"slow-{len(results.throughput)}.txt"
        out.unlink(missing_ok=True)
        sinks = {"slow": {"type": "bench-slow", "path": str(out), "delay_ms": plan.slow_delay_ms}}
        config = consumer_config(
            workdir / f"consumer-slow-{len(results.throughput)}.yaml",
            bootstrap,
            topic,
            sinks,
            {"store": "memory"},
            concurrency,
        )
        t = time_delivery(
            consumer_process(workdir, name, config, plugins), out, events, plan.timeout
        )
        results.throughput.append(t)
        _log(f"{name}: {t.events_per_s:,.0f} events/s")
        if concurrency is None:
            results.slow_order_ok, results.slow_order_detail = check_order(out)


class SinkTail(threading.Thread):
    """Notes when each event id appears in the file sink's output (1 ms polls)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[str, tuple[float, str]] = {}  # id -> (arrival, ce_time)
        self.stop = threading.Event()

    def run(self) -> None:
        offset = 0
        while not self.stop.is_set():
            try:
                with self.path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            now = time.time()
            end = chunk.rfind(b"\n") + 1
            for line in chunk[:end].splitlines():
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                self.seen.setdefault(event["id"], (now, event["time"]))
            offset += end
            time.sleep(0.001)


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _end_to_end(
    plan: ConsumerPlan, workdir: Path, bootstrap: str, topics: list[str], results: ConsumerResults
) -> None:
    for rate in plan.e2e_rates:
        results.end_to_end.append(_end_to_end_at(rate, plan, workdir, bootstrap, topics))


def _end_to_end_at(
    rate: float, plan: ConsumerPlan, workdir: Path, bootstrap: str, topics: list[str]
) -> EndToEnd:
    """One gateway and one consumer process, fresh, on a fresh topic, at ``rate``."""
    topic = _new_topic(bootstrap, "e2e", 6, topics)
    workdir = workdir / f"e2e-{rate:g}"
    workdir.mkdir(parents=True, exist_ok=True)
    count = int(rate * plan.e2e_seconds)
    warm = 200
    requests = signed_requests("hmac", count + warm, salt=topic)
    warm_file = write_wrk_requests(workdir / "e2e-warm.txt", requests[:warm])
    load_file = write_wrk_requests(workdir / "e2e-requests.txt", requests[warm:])
    gw_config = gateway_config(workdir / "gateway-e2e.yaml", bootstrap, topic, "hmac", 6)
    gateway = gateway_target(workdir, "gateway-e2e", gw_config, warm_file)
    out = workdir / "events-e2e.jsonl"
    out.unlink(missing_ok=True)
    sinks = {"events_file": {"type": "file", "path": str(out)}}
    config = consumer_config(
        workdir / "consumer-e2e.yaml", bootstrap, topic, sinks, {"store": "memory"}
    )
    consumer = consumer_process(workdir, "consumer-e2e", config, None)
    tail = SinkTail(out)
    try:
        gateway.process.start()
        consumer.start()
        check_accepts(gateway)
        tail.start()
        # Warm both sides: a short run at the target rate, then wait for the consumer.
        _loadgen(
            gateway.url,
            warm_file,
            min(rate, 500),
            warm / min(rate, 500),
            workdir / "e2e-warm.jsonl",
        )
        _wait(lambda: len(tail.seen) >= warm, 60, "the consumer to deliver the warm-up")
        outcomes = _loadgen(
            gateway.url, load_file, rate, plan.e2e_seconds, workdir / "e2e-load.jsonl"
        )
        accepted = [o for o in outcomes if o["status"] == 202]
        ids = {o["id"] for o in accepted}
        _wait(lambda: ids <= tail.seen.keys(), 60, "every accepted event in the sink")
    finally:
        tail.stop.set()
        consumer.stop()
        gateway.process.stop()
    from_ack = []
    from_receive = []
    for o in accepted:
        arrival, ce_time = tail.seen[o["id"]]
        from_ack.append((arrival - o["ack"]) * 1000)
        from_receive.append((arrival - parse_time(ce_time).timestamp()) * 1000)
    ingress = [(o["ack"] - o["due"]) * 1000 for o in accepted]
    e = EndToEnd(
        rate=rate,
        seconds=plan.e2e_seconds,
        sent=len(outcomes),
        accepted=len(accepted),
        delivered=sum(1 for o in accepted if o["id"] in tail.seen),
        ingress_p50_ms=statistics.median(ingress),
        ingress_p99_ms=_pct(ingress, 99),
        from_ack_p50_ms=statistics.median(from_ack),
        from_ack_p99_ms=_pct(from_ack, 99),
        from_receive_p50_ms=statistics.median(from_receive),
        from_receive_p99_ms=_pct(from_receive, 99),
        max_ms=max(from_receive),
    )
    _log(f"end to end at {rate:g}/s: p99 {e.from_receive_p99_ms:.1f} ms from receipt")
    return e


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _loadgen(
    url: str, requests: Path, rate: float, seconds: float, out: Path
) -> list[dict[str, Any]]:
    argv = python("-m", "bench.loadgen", "--url", url, "--requests", str(requests))
    argv += ["--rate", f"{rate:g}", "--duration", f"{seconds:g}", "--out", str(out)]
    done = subprocess.run(  # noqa: S603
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ},
    )
    if done.returncode != 0:
        raise BenchError(f"bench.loadgen failed: {done.stderr[-1000:]}")
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]
