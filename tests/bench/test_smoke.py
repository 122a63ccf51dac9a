"""Smoke test of the benchmark harness: ``python -m bench --quick`` against the real
services, as ``make bench`` runs it, only shorter.

It checks that every target and case ran and that the tables are well formed, never
how fast anything was: speed belongs to ``make bench``, not to the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = {"ceiling", "naive", "gateway-hmac", "gateway-jwt", "gateway-quickstart"}
CASES = {
    "dedup memory + file sink",
    "dedup redis + file sink",
    "slow sink, keys in parallel",
    "slow sink, one at a time",
}


@pytest.fixture(scope="module")
def quick_run(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    argv = [sys.executable, "-m", "bench", "--quick", "--out", str(out)]
    argv += ["--bootstrap", kafka_bootstrap, "--redis-url", redis_url]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
    return done, out


def _results(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    done, out = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


@pytest.mark.timeout(300)
def test_every_ingress_target_accepted_requests(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    data = _results(quick_run)
    summaries = data["ingress"]["summaries"]
    assert {s["target"] for s in summaries} == TARGETS
    for s in summaries:
        assert s["accepted_per_s"] > 0, s
        assert s["p50_ms"] <= s["p99_ms"] <= s["p999_ms"], s
        assert s["cpu_s_per_1k"] > 0, s
        # A Python server under load holds tens of MiB; well under a few GiB.
        assert 10 < s["peak_rss_mib"] < 4096, s
    assert data["ingress"]["errors"] == []


@pytest.mark.timeout(300)
def test_every_consumer_case_delivered(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    data = _results(quick_run)
    consumers = data["consumers"]
    assert consumers["errors"] == []
    assert {t["case"] for t in consumers["throughput"]} == CASES
    for t in consumers["throughput"]:
        assert t["events_per_s"] > 0, t
    assert consumers["slow_order_ok"] is True, consumers["slow_order_detail"]
    assert [e["rate"] for e in consumers["end_to_end"]] == [200]
    for e2e in consumers["end_to_end"]:
        assert e2e["accepted"] > 0
        assert e2e["delivered"] == e2e["accepted"]


@pytest.mark.timeout(300)
def test_markdown_tables_are_well_formed(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    text = (out / "results.md").read_text()
    assert text in done.stdout  # printed as well as written
    for heading in ("## Ingress", "## Consumers", "## Goals"):
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows
    # Each table's rows have as many cells as its header.
    tables: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not previous:
            tables.append([])
        if is_row:
            tables[-1].append(line)
        previous = is_row
    for table in tables:
        widths = {row.count("|") for row in table}
        assert len(widths) == 1, table
    for target in TARGETS:
        assert f"| {target} | 16 |" in text
