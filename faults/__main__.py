"""``python -m faults``: run the fault scenarios and print the figures table.

Exit status 0 when every scenario passed, 1 when one failed (the table says which
and why), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from faults.reconcile import Result, sink_table, table
from faults.scenarios import FULL, SCENARIOS, SHORT, Env


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m faults",
        description="Fault-injection scenarios against real gateway and consumer processes "
        "on loopback; every 202 is reconciled against Kafka and the sinks.",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)} (default: all)",
    )
    p.add_argument("--short", action="store_true", help="short durations (as in make test)")
    p.add_argument("--run-dir", type=Path, help="where configs and logs go (default: a temp dir)")
    p.add_argument(
        "--kafka",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="shared Kafka (never stopped; scenario 1 starts its own)",
    )
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6399/0"))
    p.add_argument(
        "--database",
        default=os.environ.get("DATABASE_URL", "postgresql://webhooks@127.0.0.1:5439/webhooks"),
    )
    return p


async def run(env: Env, names: list[str], short: bool) -> list[Result]:
    profile = SHORT if short else FULL
    results: list[Result] = []
    for name in names:
        started = time.monotonic()
        print(f"faults: scenario {name} ({profile.name}) ...", file=sys.stderr, flush=True)
        try:
            result = await SCENARIOS[name](env, profile)
        except Exception as exc:
            traceback.print_exc()
            result = Result(name, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            result.failures.append(f"could not run: {type(exc).__name__}: {exc}")
        result.notes.append(f"took {time.monotonic() - started:.0f} s")
        print(
            f"faults: scenario {name}: {'PASS' if result.ok else 'FAIL'}",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    # Absolute: the service scripts daemonize and change directory.
    run_dir = (args.run_dir or Path(tempfile.mkdtemp(prefix="faults-"))).resolve()
    env = Env(run_dir, args.kafka, args.redis, args.database)
    started = time.monotonic()
    results = asyncio.run(run(env, names, args.short))
    print(table(results))
    print()
    if per_sink := sink_table(results):
        print(per_sink)
        print()
    for r in results:
        if r.unacked_in_kafka:
            r.notes.insert(
                0,
                f"{r.unacked_in_kafka} event(s) answered 503 reached Kafka anyway (the "
                "producer delivered after the deadline; a provider retry is deduplicated)",
            )
        for note in r.notes:
            print(f"- {r.scenario}: {note}")
        for failure in r.failures:
            print(f"- {r.scenario}: FAILED: {failure}")
    print(f"\n{len(results)} scenario(s) in {time.monotonic() - started:.0f} s; logs in {run_dir}")
    (run_dir / "results.json").write_text(
        json.dumps([dataclasses.asdict(r) for r in results], indent=2)
    )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
