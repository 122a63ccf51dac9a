"""The fault scenarios of ``make faults`` in their short profile (seconds instead of
minutes of load and outage), against the real services: each must reconcile every
acknowledged id with 0 lost and 0 duplicates (scenario 2: 0 at the postgres and file
sinks, and at most the documented bound of repeats at the http sink)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.reconcile import Result, sink_table, table
from faults.scenarios import KILL_PARALLEL, SCENARIOS, SHORT, Env


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario_short(
    name: str, tmp_path: Path, kafka_bootstrap: str, redis_url: str, database_url: str
) -> None:
    env = Env(tmp_path, kafka_bootstrap, redis_url, database_url)
    result: Result = await SCENARIOS[name](env, SHORT)
    print("\n" + table([result]) + "\n" + sink_table([result]) + "\n" + "\n".join(result.notes))
    assert result.failures == [], f"{result.failures}; logs in {tmp_path}"
    assert result.acked > 0
    assert result.lost == 0
    assert result.duplicates == 0  # of the exactly-once sinks where a scenario has several
    assert result.kafka_duplicates == 0
    assert result.in_kafka == result.acked
    for sink in result.sinks:  # an at-least-once sink (http) may repeat, up to its bound
        assert sink.lost == 0, sink
        assert sink.delivered == result.acked, sink
        assert sink.duplicates <= sink.allowed_duplicates, sink
    if name == "2":
        assert [(s.sink, s.allowed_duplicates) for s in result.sinks] == [
            ("pg", 0),
            ("file", 0),
            ("hook", SHORT.consumer_kills * KILL_PARALLEL),
        ]
