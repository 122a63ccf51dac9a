"""The fault scenarios of ``make faults`` in their short profile (seconds instead of
minutes of load and outage), against the real services: each must reconcile every
acknowledged id with 0 lost and 0 duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.reconcile import Result, table
from faults.scenarios import SCENARIOS, SHORT, Env


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario_short(
    name: str, tmp_path: Path, kafka_bootstrap: str, redis_url: str, database_url: str
) -> None:
    env = Env(tmp_path, kafka_bootstrap, redis_url, database_url)
    result: Result = await SCENARIOS[name](env, SHORT)
    print("\n" + table([result]) + "\n" + "\n".join(result.notes))
    assert result.failures == [], f"{result.failures}; logs in {tmp_path}"
    assert result.acked > 0
    assert result.lost == 0
    if name != "2":  # SIGKILL: bounded redeliveries of in-flight events (see the notes)
        assert result.duplicates == 0
    assert result.kafka_duplicates == 0
    assert result.in_kafka == result.acked
