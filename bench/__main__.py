"""``python -m bench``: the side-by-side benchmark, in one run.

Writes ``<out>/results.md`` and ``<out>/results.json`` and prints the tables.
``--quick`` is the seconds-long smoke run used by the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import consume, ingress, report, wrk
from bench.procs import REPO, BenchError

FULL_INGRESS = ingress.IngressPlan(
    connections=(16, 64, 256),
    duration=10,
    warmup=5,
    rounds=3,
    workers=(1, 2, 4),
    workers_connections=64,
    profile_seconds=10,
)
QUICK_INGRESS = ingress.IngressPlan(
    connections=(16,),
    duration=1,
    warmup=1,
    rounds=1,
    workers=(),
    workers_connections=16,
    profile_seconds=0,
)


def consumer_plan(quick: bool, redis_url: str) -> consume.ConsumerPlan:
    if quick:
        return consume.ConsumerPlan(
            events=2_000,
            slow_events=400,
            serial_events=20,
            slow_keys=100,
            slow_delay_ms=20,
            e2e_rates=(200,),
            e2e_seconds=2,
            redis_url=redis_url,
            timeout=60,
            memory_ids=20_000,
        )
    return consume.ConsumerPlan(
        events=100_000,
        slow_events=10_000,
        serial_events=250,
        slow_keys=1000,
        slow_delay_ms=20,
        e2e_rates=(1000, 5000),
        e2e_seconds=10,
        redis_url=redis_url,
        profile_seconds=8,
        variations=True,
        memory_ids=1_000_000,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--only", choices=["ingress", "consumers"], help="run one half")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--duration", type=float, help="override seconds per measurement")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers sweep")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy recording")
    parser.add_argument(
        "--docs-dir",
        type=Path,
        default=None,
        help="copy the flame graph SVG here (default: docs/ on full runs, nowhere on --quick)",
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6399/0")
    )
    args = parser.parse_args(argv)

    plan = QUICK_INGRESS if args.quick else FULL_INGRESS
    changes: dict[str, Any] = {}
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.duration:
        changes["duration"] = args.duration
    if args.no_workers:
        changes["workers"] = ()
    if args.no_profile:
        changes["profile_seconds"] = 0
    plan = dataclasses.replace(plan, **changes)
    cplan = consumer_plan(args.quick, args.redis_url)
    if args.no_profile:
        cplan = dataclasses.replace(cplan, profile_seconds=0)
    docs_dir = args.docs_dir or (None if args.quick else REPO / "docs")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": report.machine(),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "plan": {"ingress": dataclasses.asdict(plan), "consumers": dataclasses.asdict(cplan)},
    }
    try:
        wrk.ensure_wrk()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    ing: ingress.IngressResults | None = None
    con: consume.ConsumerResults | None = None
    if args.only in (None, "ingress"):
        try:
            ing = ingress.run(plan, out / "ingress", args.bootstrap, docs_dir)
        except BenchError as exc:
            ing = ingress.IngressResults(errors=[str(exc)])
            print(f"bench: ingress failed: {exc}", file=sys.stderr)
    if args.only in (None, "consumers"):
        con = consume.run(cplan, out / "consumers", args.bootstrap)

    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["plan"] = json.dumps(meta["plan"], separators=(", ", ": "))
    text = report.render(meta, ing, con)
    (out / "results.md").write_text(text)
    data = {
        **meta,
        "ingress": ing.to_json() if ing else None,
        "consumers": con.to_json() if con else None,
        "goals": report.goals(ing, con),
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str))
    print(text)
    failed = (ing.errors if ing else []) + (con.errors if con else [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
