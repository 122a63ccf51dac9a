"""Ingress benchmarks: ceiling, naive baseline and the gateway, side by side.

All servers run at once on their own ports and are measured in interleaved rounds
(every round visits every target at every concurrency), so drift in the machine's
load affects all of them alike; the reported figure is the median over rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import flame, kafka, wrk
from bench.payload import PUBLIC_URL, SECRET, WEBHOOK_PATH, Mode, signed_requests
from bench.payload import write_wrk_requests as write_requests
from bench.procs import (
    REPO,
    BenchError,
    Process,
    find_pid,
    free_port,
    free_port_run,
    python,
    tree_cpu_seconds,
    wait_port,
)

BROKER_MAIN_CLASS = "kafka.Kafka"
# Distinct orders per request file: enough to spread keys over every partition.
VARIANTS = 1000


@dataclass(frozen=True, slots=True)
class IngressPlan:
    connections: Sequence[int]
    duration: float
    warmup: float
    rounds: int
    workers: Sequence[int]  # gateway --workers values to compare; empty: skip
    workers_connections: int
    profile_seconds: float  # py-spy recording of the gateway; 0: skip
    partitions: int = 6


@dataclass
class Target:
    name: str
    process: Process
    port: int
    requests_file: Path
    # The gateway's /metrics, for its own timings: one per worker, summed.
    admin_ports: Sequence[int] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"


@dataclass(frozen=True, slots=True)
class Sample:
    target: str
    connections: int
    round: int
    accepted_per_s: float
    accepted: int
    rejected: int
    statuses: dict[int, int]
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_s: float
    cpu_s_per_1k: float
    load1: float
    # Gateway only (from its /metrics): mean time in the handler and awaiting Kafka.
    server_ms: float | None = None
    kafka_ms: float | None = None
    # The local broker's CPU over the same interval, per 1k accepted (it shares the cores).
    broker_cpu_s_per_1k: float | None = None
    # The target's resident memory (all its processes) right after the load, and the
    # sum of their peaks so far, MiB.
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians over rounds of one target at one concurrency."""

    target: str
    connections: int
    rounds: int
    accepted_per_s: float
    rejected: int  # summed over rounds
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_s_per_1k: float
    server_ms: float | None = None
    kafka_ms: float | None = None
    broker_cpu_s_per_1k: float | None = None
    peak_rss_mib: float = 0.0  # the highest over rounds


@dataclass
class IngressResults:
    summaries: list[Summary] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    workers: list[Summary] = field(default_factory=list)
    # The raw-ASGI ceiling with the same process counts, for the gateway/ceiling ratio.
    workers_ceiling: list[Summary] = field(default_factory=list)
    workers_note: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "summaries": [asdict(s) for s in self.summaries],
            "samples": [asdict(s) for s in self.samples],
            "workers": [asdict(s) for s in self.workers],
            "workers_ceiling": [asdict(s) for s in self.workers_ceiling],
            "workers_note": self.workers_note,
            "profile": self.profile,
            "errors": self.errors,
        }


QUICKSTART = REPO / "deploy" / "config" / "quickstart.yaml"


def shipped_gateway_section() -> dict[str, Any]:
    """The quick start's ``gateway:`` section, as shipped (its producer settings, bounds
    and timeouts), so ``gateway-quickstart`` measures what a new user runs."""
    section = dict(yaml.safe_load(QUICKSTART.read_text())["gateway"])
    section["log_format"] = "text"
    section["log_level"] = "WARNING"
    return section


def gateway_config(
    path: Path,
    bootstrap: str,
    topic: str,
    mode: Mode,
    partitions: int,
    gateway: dict[str, Any] | None = None,
) -> Path:
    """The shared YAML file as a user writes it, with one Crystallize source;
    ``gateway``: a ``gateway:`` section (none: every default)."""
    doc: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": [{"name": topic, "partitions": partitions, "replication_factor": 1}],
        "sources": [
            {
                "name": "crystallize",
                "path": WEBHOOK_PATH,
                "verifier": {"type": "crystallize", "mode": mode},
                "secrets": ["${BENCH_SECRET}"],
                "topic": topic,
                "public_url": PUBLIC_URL,
            }
        ],
    }
    if gateway is not None:
        doc["gateway"] = gateway
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def uvicorn_argv(
    app: str, port: int, *, factory: bool = False, workers: int | None = None
) -> list[str]:
    """uvicorn as the gateway runs it: auto loop/http (uvloop, httptools), no access log.
    ``workers``: uvicorn's own ``--workers`` (one listening socket shared by all)."""
    argv = python("-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port))
    argv += ["--no-access-log", "--no-server-header", "--log-level", "warning"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return [*argv, "--factory"] if factory else argv


def gateway_process(
    workdir: Path, name: str, config: Path, port: int, admin_port: int, workers: int | None = None
) -> Process:
    argv = python("-m", "gateway", "serve", "--config", str(config))
    argv += ["--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin_port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return Process(name, argv, workdir / f"{name}.log", env={"BENCH_SECRET": SECRET})


def gateway_target(
    workdir: Path, name: str, config: Path, requests_file: Path, workers: int | None = None
) -> Target:
    """``python -m gateway serve`` on free ports; with ``--workers N``, worker i serves
    its /metrics on ``admin_port + i`` and the harness sums over all of them."""
    count = workers or 1
    port, admin_port = free_port(), free_port_run(count)
    while port in range(admin_port, admin_port + count):
        port = free_port()
    process = gateway_process(workdir, name, config, port, admin_port, workers)
    admin_ports = [admin_port + i for i in range(count)]
    return Target(name, process, port, requests_file, admin_ports)


def ceiling_target(workdir: Path, requests_file: Path, workers: int | None = None) -> Target:
    name = "ceiling" if workers is None else f"ceiling-w{workers}"
    port = free_port()
    argv = uvicorn_argv("bench.apps.ceiling:app", port, workers=workers)
    return Target(name, Process(name, argv, workdir / f"{name}.log"), port, requests_file)


def wait_ready(target: Target, timeout: float) -> None:
    """Every worker's /readyz answers 200 (one 202 proves only one worker is up)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        for admin_port in target.admin_ports:
            while True:
                target.process.check_alive()
                try:
                    if client.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"{target.name}: port {admin_port} not ready in {timeout:g} s")
                time.sleep(0.2)


def check_accepts(target: Target, timeout: float = 60.0) -> None:
    """Send one real request until it gets 202 (the producer may still be connecting)."""
    wait_port(target.port, target.process, timeout)
    wait_ready(target, timeout)
    lines = target.requests_file.read_bytes().split(b"\n")
    headers = {"content-type": "application/json", "x-crystallize-signature": lines[0].decode()}
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            target.process.check_alive()
            try:
                answer = client.post(target.url, content=lines[1], headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 202:
                    return
                last = f"HTTP {answer.status_code}: {answer.text[:300]}"
            time.sleep(0.5)
    raise BenchError(f"{target.name}: no 202 within {timeout:g} s; last answer {last}")


_TIMINGS = {
    "webhookgw_ingress_request_duration_seconds": "server",
    "webhookgw_ingress_produce_duration_seconds": "kafka",
}


def gateway_timings(admin_ports: Sequence[int]) -> dict[str, float]:
    """Sums and counts of the gateway's request and produce histograms (all labels, all
    workers)."""
    out: dict[str, float] = {}
    lines = [
        line
        for admin_port in admin_ports
        for line in httpx.get(
            f"http://127.0.0.1:{admin_port}/metrics", timeout=10
        ).text.splitlines()
    ]
    for line in lines:
        name, _, rest = line.partition("{")
        for metric, short in _TIMINGS.items():
            for suffix in ("_sum", "_count"):
                if name == metric + suffix:
                    value = float(rest.rsplit(" ", 1)[1])
                    out[short + suffix] = out.get(short + suffix, 0.0) + value
    return out


def _mean_ms(before: dict[str, float], after: dict[str, float], what: str) -> float | None:
    count = after.get(what + "_count", 0.0) - before.get(what + "_count", 0.0)
    if count <= 0:
        return None
    return (after[what + "_sum"] - before.get(what + "_sum", 0.0)) / count * 1000


def measure(target: Target, connections: int, duration: float, round_: int) -> Sample:
    target.process.check_alive()
    timings = gateway_timings(target.admin_ports)
    broker = find_pid(BROKER_MAIN_CLASS)
    broker_before = tree_cpu_seconds(broker) if broker else 0.0
    cpu_before = target.process.cpu_seconds()
    result = wrk.run(target.url, target.requests_file, connections=connections, duration=duration)
    cpu = target.process.cpu_seconds() - cpu_before
    broker_cpu = tree_cpu_seconds(broker) - broker_before if broker else None
    rss, peak_rss = target.process.rss_bytes()
    timings_after = gateway_timings(target.admin_ports)
    accepted = result.accepted
    return Sample(
        target=target.name,
        connections=connections,
        round=round_,
        accepted_per_s=result.accepted_per_second,
        accepted=accepted,
        rejected=result.rejected,
        statuses=result.statuses,
        p50_ms=result.latency_ms["p50"],
        p99_ms=result.latency_ms["p99"],
        p999_ms=result.latency_ms["p99.9"],
        cpu_s=cpu,
        cpu_s_per_1k=cpu / accepted * 1000 if accepted else float("nan"),
        load1=os.getloadavg()[0],
        server_ms=_mean_ms(timings, timings_after, "server"),
        kafka_ms=_mean_ms(timings, timings_after, "kafka"),
        broker_cpu_s_per_1k=broker_cpu / accepted * 1000 if broker_cpu and accepted else None,
        rss_mib=rss / 2**20,
        peak_rss_mib=peak_rss / 2**20,
    )


def summarise(samples: Sequence[Sample]) -> list[Summary]:
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.target, s.connections), []).append(s)
    out = []
    for (name, conns), group in groups.items():
        out.append(
            Summary(
                target=name,
                connections=conns,
                rounds=len(group),
                accepted_per_s=statistics.median(s.accepted_per_s for s in group),
                rejected=sum(s.rejected for s in group),
                p50_ms=statistics.median(s.p50_ms for s in group),
                p99_ms=statistics.median(s.p99_ms for s in group),
                p999_ms=statistics.median(s.p999_ms for s in group),
                cpu_s_per_1k=statistics.median(s.cpu_s_per_1k for s in group),
                server_ms=_median_or_none([s.server_ms for s in group]),
                kafka_ms=_median_or_none([s.kafka_ms for s in group]),
                broker_cpu_s_per_1k=_median_or_none([s.broker_cpu_s_per_1k for s in group]),
                peak_rss_mib=max(s.peak_rss_mib for s in group),
            )
        )
    return out


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@contextmanager
def running(targets: Sequence[Target], errors: list[str]) -> Iterator[list[Target]]:
    """Start every target; yield those that accept requests (the others are logged in
    ``errors`` and stopped, so one broken target does not void the run)."""
    try:
        for t in targets:
            t.process.start()
        ready = []
        for t in targets:
            try:
                check_accepts(t)
            except BenchError as exc:
                errors.append(f"{t.name}: {exc}")
                _log(f"FAILED to start {t.name}: {exc}")
                t.process.stop()
            else:
                ready.append(t)
        yield ready
    finally:
        for t in targets:
            t.process.stop()


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(plan: IngressPlan, workdir: Path, bootstrap: str, docs_dir: Path | None) -> IngressResults:
    results = IngressResults()
    workdir.mkdir(parents=True, exist_ok=True)
    topic = kafka.topic_name("ingress")
    asyncio.run(kafka.create_topics(bootstrap, [topic], plan.partitions))
    try:
        _run(plan, workdir, bootstrap, topic, results, docs_dir)
    finally:
        asyncio.run(kafka.delete_topics(bootstrap, [topic]))
    return results


def _run(
    plan: IngressPlan,
    workdir: Path,
    bootstrap: str,
    topic: str,
    results: IngressResults,
    docs_dir: Path | None,
) -> None:
    files = {
        mode: write_requests(workdir / f"requests-{mode}.txt", signed_requests(mode, VARIANTS))
        for mode in ("hmac", "jwt")
    }
    configs = {
        mode: gateway_config(
            workdir / f"gateway-{mode}.yaml", bootstrap, topic, mode, plan.partitions
        )
        for mode in ("hmac", "jwt")
    }
    quickstart = gateway_config(
        workdir / "gateway-quickstart.yaml",
        bootstrap,
        topic,
        "hmac",
        plan.partitions,
        shipped_gateway_section(),
    )
    ports = {"naive": free_port()}
    naive_env = {"BENCH_KAFKA_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic, "BENCH_SECRET": SECRET}
    targets = [
        ceiling_target(workdir, files["hmac"]),
        Target(
            "naive",
            Process(
                "naive",
                uvicorn_argv("bench.apps.naive:create_app", ports["naive"], factory=True),
                workdir / "naive.log",
                env=naive_env,
            ),
            ports["naive"],
            files["hmac"],
        ),
        *(
            gateway_target(workdir, f"gateway-{mode}", configs[mode], files[mode])
            for mode in ("hmac", "jwt")
        ),
        gateway_target(workdir, "gateway-quickstart", quickstart, files["hmac"]),
    ]
    with running(targets, results.errors) as targets:
        _log(f"ingress: warm-up {plan.warmup:g} s per target")
        for t in targets:
            wrk.run(t.url, t.requests_file, connections=max(plan.connections), duration=plan.warmup)
        for round_ in range(plan.rounds):
            for conns in plan.connections:
                for t in targets:
                    sample = measure(t, conns, plan.duration, round_)
                    results.samples.append(sample)
                    _log(
                        f"ingress round {round_ + 1}/{plan.rounds} c={conns} {t.name}: "
                        f"{sample.accepted_per_s:,.0f} accepted/s, p99 {sample.p99_ms:.1f} ms, "
                        f"rejected {sample.rejected}"
                    )
        for t in targets:
            if plan.profile_seconds > 0 and t.name in ("gateway-hmac", "gateway-jwt"):
                _log(f"profiling {t.name} with py-spy")
                try:
                    results.profile[t.name] = profile(t, plan, workdir, docs_dir)
                except BenchError as exc:
                    results.errors.append(f"profile of {t.name}: {exc}")
    results.summaries = summarise(results.samples)
    if plan.workers:
        _workers(plan, workdir, configs["hmac"], files["hmac"], results)


def _workers(
    plan: IngressPlan, workdir: Path, config: Path, requests_file: Path, results: IngressResults
) -> None:
    """The gateway (HMAC) with ``--workers N`` next to the ceiling with as many uvicorn
    workers, both running at once and measured in interleaved rounds like the main table."""
    samples: list[Sample] = []
    ceiling_samples: list[Sample] = []
    for count in plan.workers:
        gateway = gateway_target(workdir, f"gateway-hmac-w{count}", config, requests_file, count)
        ceiling = ceiling_target(workdir, requests_file, count)
        errors: list[str] = []
        with running([gateway, ceiling], errors) as ready:
            if gateway not in ready:
                # The last log line says why (e.g. "unrecognized arguments: --workers 1").
                results.workers_note = f"--workers {count}: {errors[0].splitlines()[-1]}"
                _log(results.workers_note)
                break
            results.errors.extend(errors)
            for t in ready:
                wrk.run(
                    t.url, requests_file, connections=plan.workers_connections, duration=plan.warmup
                )
            for round_ in range(plan.rounds):
                for t in ready:
                    sample = measure(t, plan.workers_connections, plan.duration, round_)
                    (samples if t is gateway else ceiling_samples).append(sample)
                    _log(f"{t.name}: {sample.accepted_per_s:,.0f} accepted/s")
    results.samples.extend(samples + ceiling_samples)
    results.workers = summarise(samples)
    results.workers_ceiling = summarise(ceiling_samples)
    if results.workers and not results.workers_note:
        results.workers_note = workers_note(results.workers, results.workers_ceiling)


def workers_note(gateway: Sequence[Summary], ceiling: Sequence[Summary]) -> str:
    """How the sweep was run (the figures are in the table)."""
    del gateway, ceiling
    return (
        "The gateway's workers each listen with SO_REUSEPORT (the kernel spreads "
        "connections evenly); the ceiling runs under uvicorn --workers N, whose workers "
        "share one inherited socket. Both run at once and are measured in interleaved "
        "rounds. CPU counts the supervisor and every worker."
    )


def profile(
    target: Target, plan: IngressPlan, workdir: Path, docs_dir: Path | None
) -> dict[str, Any]:
    """py-spy the gateway under load at the workers' concurrency: a flame graph (SVG)
    and the collapsed stacks, summarised as the functions with the most CPU samples."""
    return flame.record(
        target.name,
        target.process.pid,
        target.url,
        target.requests_file,
        plan,
        workdir,
        docs_dir,
    )
