"""Markdown tables (and the performance goals, met or missed) from one run's results."""

from __future__ import annotations

import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.consume import ConsumerResults
from bench.ingress import IngressResults, Summary

GATEWAYS = ("gateway-hmac", "gateway-jwt", "gateway-quickstart")
# The goals a run is judged against: throughput as a share of the raw-ASGI ceiling,
# and end-to-end p99 by offered rate (events/s -> ms).
GATEWAY_CEILING_RATIO = {"gateway-hmac": 0.35, "gateway-jwt": 0.30}
E2E_P99_MS = {1000.0: 25.0, 5000.0: 50.0}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"python": platform.python_version()}
    for dist in (
        "uvicorn",
        "uvloop",
        "httptools",
        "fastapi",
        "starlette",
        "aiokafka",
        "orjson",
        "PyJWT",
        "redis",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "versions": versions,
        "argv": sys.argv[1:],
    }


def _f(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    out[1] = "|---" + out[1][5:]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _by(summaries: list[Summary]) -> dict[tuple[str, int], Summary]:
    return {(s.target, s.connections): s for s in summaries}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _workers_of(s: Summary) -> str:
    return s.target.rsplit("-w", 1)[-1]


def workers_rows(r: IngressResults) -> list[list[str]]:
    """The --workers sweep: each count next to the ceiling with as many workers and the
    naive app (one process, same concurrency) of the main table."""
    base = r.workers[0].accepted_per_s
    ceilings = {_workers_of(c): c for c in r.workers_ceiling}
    naive = _by(r.summaries).get(("naive", r.workers[0].connections))
    rows = []
    for s in r.workers:
        ceiling = ceilings.get(_workers_of(s))
        rows.append(
            [
                _workers_of(s),
                str(s.connections),
                _f(s.accepted_per_s),
                _f(ratio(s.accepted_per_s, base), 2),
                _f(s.p99_ms, 2),
                _f(s.cpu_s_per_1k, 3),
                _f(ceiling.accepted_per_s) if ceiling else "-",
                _f(ratio(s.accepted_per_s, ceiling.accepted_per_s), 2) if ceiling else "-",
                _f(ratio(s.accepted_per_s, naive.accepted_per_s), 2) if naive else "-",
            ]
        )
    return rows


def ingress_tables(r: IngressResults) -> list[str]:
    by = _by(r.summaries)
    conns = sorted({s.connections for s in r.summaries})
    order = ["ceiling", "naive", *GATEWAYS]
    rows = []
    for c in conns:
        for name in order:
            s = by.get((name, c))
            if s is None:
                continue
            ceiling = by.get(("ceiling", c))
            naive = by.get(("naive", c))
            rows.append(
                [
                    name,
                    str(c),
                    _f(s.accepted_per_s),
                    str(s.rejected),
                    _f(s.p50_ms, 2),
                    _f(s.p99_ms, 2),
                    _f(s.p999_ms, 2),
                    _f(s.cpu_s_per_1k, 3),
                    _f(s.server_ms, 2) if s.server_ms is not None else "-",
                    _f(s.kafka_ms, 2) if s.kafka_ms is not None else "-",
                    _f(s.broker_cpu_s_per_1k, 3) if s.broker_cpu_s_per_1k is not None else "-",
                    _f(s.peak_rss_mib, 0) if s.peak_rss_mib else "-",
                    _f(ratio(s.accepted_per_s, ceiling.accepted_per_s), 2) if ceiling else "-",
                    _f(ratio(s.accepted_per_s, naive.accepted_per_s), 2) if naive else "-",
                ]
            )
    lines = ["## Ingress", ""]
    lines += _table(
        [
            "target",
            "conns",
            "accepted req/s",
            "non-202",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "CPU s / 1k req",
            "handler ms",
            "Kafka wait ms",
            "broker CPU s / 1k",
            "peak RSS MiB",
            "x ceiling",
            "x naive",
        ],
        rows,
    )
    lines += [
        "",
        "accepted req/s: 202 answers per second (median over rounds); non-202: other answers "
        "and socket errors, summed over rounds; latency: wrk, closed loop, request written to "
        "response read; CPU: server process (and children) user+system seconds per 1,000 "
        "accepted; handler / Kafka wait: the gateway's own histograms, mean per request, "
        "of the whole handler and of awaiting the Kafka acknowledgement; broker CPU: the "
        "local Kafka broker's CPU seconds over the same interval per 1,000 accepted; peak RSS: "
        "the sum of the target's processes' resident-memory peaks (VmHWM), highest over rounds.",
    ]
    if r.workers or r.workers_note:
        lines += ["", "### Gateway (HMAC) throughput vs `--workers`", ""]
        if r.workers:
            lines += _table(
                [
                    "workers",
                    "conns",
                    "accepted req/s",
                    "x 1 worker",
                    "p99 ms",
                    "CPU s / 1k req",
                    "ceiling req/s",
                    "x ceiling (same workers)",
                    "x naive (1 process)",
                ],
                workers_rows(r),
            )
        if r.workers_note:
            lines += ["", f"Note: {r.workers_note}"]
    for name, p in r.profile.items():
        lines += [
            "",
            f"### Where {name}'s CPU goes (py-spy, {p['connections']} connections, "
            f"{p['samples']} samples)",
            "",
        ]
        lines += profile_tables(p)
        lines += ["", f"Flame graph: `{p['svg']}`"]
    return lines


def profile_tables(p: dict[str, Any]) -> list[str]:
    """One py-spy summary: top functions by own and inclusive time, own time by package."""
    lines: list[str] = []
    for title, key, top in (
        ("function (own time)", "own", 12),
        ("function (inclusive)", "inclusive", 15),
        ("own time by package", "packages", 10),
    ):
        if lines:
            lines += [""]
        lines += _table(
            [title, "%"], [[f"`{x['function']}`", _f(x["percent"])] for x in p[key][:top]]
        )
    return lines


def consumer_tables(r: ConsumerResults) -> list[str]:
    lines = ["## Consumers", ""]
    lines += _table(
        ["case", "events", "events/s", "start-up s", "CPU s / 1k events"],
        [
            [t.case, str(t.events), _f(t.events_per_s), _f(t.startup_s, 1), _f(t.cpu_s_per_1k, 3)]
            for t in r.throughput
        ],
    )
    slow = {t.case: t for t in r.throughput}
    par = slow.get("slow sink, keys in parallel")
    ser = slow.get("slow sink, one at a time")
    if par and ser:
        lines += [
            "",
            f"Slow sink: {_f(ratio(par.events_per_s, ser.events_per_s), 1)} x one-at-a-time; "
            f"order per key: {'intact' if r.slow_order_ok else 'BROKEN'} ({r.slow_order_detail}).",
        ]
    for name, p in r.profile.items():
        lines += [
            "",
            f"### Where the consumer's CPU goes ({name}, py-spy, {p['samples']} samples)",
            "",
        ]
        lines += profile_tables(p)
    m = r.dedup_memory
    if m:
        lines += ["", f"### Memory dedup store, {m.ids:,} ids", ""]
        lines += _table(
            ["store", "bytes per id", "x baseline"],
            [
                [
                    "memory (digest → expiry bucket)",
                    _f(m.bytes_per_id),
                    _f(ratio(m.bytes_per_id, m.baseline_bytes_per_id), 2),
                ],
                ["baseline: OrderedDict[(id, sink)] → expiry", _f(m.baseline_bytes_per_id), "1.00"],
            ],
        )
    for e in r.end_to_end:
        lines += ["", f"### End to end at {_f(e.rate)} events/s for {_f(e.seconds)} s", ""]
        lines += _table(
            ["measure", "p50 ms", "p99 ms"],
            [
                ["ingress (due → 202)", _f(e.ingress_p50_ms, 2), _f(e.ingress_p99_ms, 2)],
                ["202 → line in file sink", _f(e.from_ack_p50_ms, 2), _f(e.from_ack_p99_ms, 2)],
                [
                    "ce_time → line in file sink",
                    _f(e.from_receive_p50_ms, 2),
                    _f(e.from_receive_p99_ms, 2),
                ],
            ],
        )
        lines += [
            "",
            f"{e.sent} sent, {e.accepted} accepted, {e.delivered} delivered; "
            f"slowest {_f(e.max_ms)} ms.",
        ]
    return lines


def goals(ing: IngressResults | None, con: ConsumerResults | None) -> list[list[str]]:
    """(goal, measured, met) rows for what this run measured."""
    rows: list[list[str]] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    if ing and ing.summaries:
        by = _by(ing.summaries)
        c = 64 if any(s.connections == 64 for s in ing.summaries) else ing.summaries[0].connections
        ceiling, naive = by.get(("ceiling", c)), by.get(("naive", c))
        for name in GATEWAYS:
            g = by.get((name, c))
            if g is None:
                continue
            floor = GATEWAY_CEILING_RATIO.get(name)
            if ceiling and floor:
                x = ratio(g.accepted_per_s, ceiling.accepted_per_s)
                rows.append(
                    [f"{name} ≥ {floor} x ceiling (c={c})", f"{x:.2f} x", verdict(x >= floor)]
                )
            if name != "gateway-hmac":
                continue
            if naive:
                x = ratio(g.accepted_per_s, naive.accepted_per_s)
                rows.append([f"{name} ≥ 2.5 x naive (c={c})", f"{x:.2f} x", verdict(x >= 2.5)])
            rows.append(
                [
                    f"{name} CPU ≤ 0.060 s per 1k requests (c={c})",
                    f"{g.cpu_s_per_1k:.3f} s",
                    verdict(g.cpu_s_per_1k <= 0.060),
                ]
            )
            rows.append(
                [f"{name} p99 ≤ 10 ms (c={c})", f"{g.p99_ms:.1f} ms", verdict(g.p99_ms <= 10)]
            )
        for name in GATEWAYS:
            widest = max(
                (s for s in ing.summaries if s.target == name and s.peak_rss_mib),
                key=lambda s: s.connections,
                default=None,
            )
            if widest is not None and name == "gateway-hmac":
                rows.append(
                    [
                        f"{name} peak RSS ≤ 150 MiB (c={widest.connections})",
                        f"{widest.peak_rss_mib:.0f} MiB",
                        verdict(widest.peak_rss_mib <= 150),
                    ]
                )
    if ing and ing.workers:
        # The same goals for the best --workers count of the sweep, against the ceiling
        # with as many workers (the naive app runs as one process: not a like-for-like
        # verdict, so it is in the workers table, not here).
        best = max(ing.workers, key=lambda s: s.accepted_per_s)
        n = _workers_of(best)
        ceiling = {_workers_of(c): c for c in ing.workers_ceiling}.get(n)
        if ceiling:
            x = ratio(best.accepted_per_s, ceiling.accepted_per_s)
            rows.append(
                [
                    f"gateway-hmac --workers {n} ≥ 0.5 x ceiling --workers {n} "
                    f"(c={best.connections})",
                    f"{x:.2f} x",
                    verdict(x >= 0.5),
                ]
            )
        rows.append(
            [
                f"gateway-hmac --workers {n} p99 ≤ 20 ms (c={best.connections})",
                f"{best.p99_ms:.1f} ms",
                verdict(best.p99_ms <= 20),
            ]
        )
    if con:
        cases = {t.case: t for t in con.throughput}
        for case, floor in (
            ("dedup memory + file sink", 40_000),
            ("dedup redis + file sink", 25_000),
        ):
            t = cases.get(case)
            if t:
                rows.append(
                    [
                        f"{case} ≥ {floor:,} events/s",
                        f"{t.events_per_s:,.0f}",
                        verdict(t.events_per_s >= floor),
                    ]
                )
        par = cases.get("slow sink, keys in parallel")
        ser = cases.get("slow sink, one at a time")
        if par and ser:
            x = ratio(par.events_per_s, ser.events_per_s)
            rows.append(
                [
                    "slow sink ≥ 40 x one-at-a-time, order intact",
                    f"{x:.1f} x, order {'intact' if con.slow_order_ok else 'broken'}",
                    verdict(x >= 40 and bool(con.slow_order_ok)),
                ]
            )
        if con.dedup_memory:
            m = con.dedup_memory
            rows.append(
                [
                    f"memory dedup store ≤ 120 B per id ({m.ids:,} ids)",
                    f"{m.bytes_per_id:.0f} B",
                    verdict(m.bytes_per_id <= 120),
                ]
            )
        for e in con.end_to_end:
            rows.append(
                [
                    f"end-to-end p99 ≤ {E2E_P99_MS.get(e.rate, 50):g} ms at {e.rate:,.0f}/s",
                    f"{e.from_receive_p99_ms:.1f} ms (from 202: {e.from_ack_p99_ms:.1f} ms)",
                    verdict(e.from_receive_p99_ms <= E2E_P99_MS.get(e.rate, 50)),
                ]
            )
    return rows


def render(meta: dict[str, Any], ing: IngressResults | None, con: ConsumerResults | None) -> str:
    m = meta["machine"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items())
    lines = [
        f"# Benchmark results ({meta['mode']} run, {meta['started']})",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}. "
        f"Load average (1/5/15 min) at start {meta['load_start']}, at end {meta['load_end']}.",
        "",
        f"Versions: {v}.",
        "",
        f"Plan: {meta['plan']}",
        "",
    ]
    if ing:
        lines += [*ingress_tables(ing), ""]
    if con:
        lines += [*consumer_tables(con), ""]
    rows = goals(ing, con)
    if rows:
        lines += ["## Goals", "", *_table(["goal", "measured", "verdict"], rows), ""]
    errors = (ing.errors if ing else []) + (con.errors if con else [])
    if errors:
        lines += ["## Errors", "", *[f"- {e}" for e in errors], ""]
    return "\n".join(lines)
