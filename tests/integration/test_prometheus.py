"""A real Prometheus scraping a real gateway and consumer: the dashboard's queries
return data, the rules evaluate, and every metric they name exists in ``/metrics``.

The scenario makes every panel's metric appear: signed webhooks (202), bad signatures
(401), a source whose topic does not exist (503 after the ack timeout), a redelivered
webhook (a duplicate), an unrouted event, and a sink that always fails (retries, then
the dead-letter topic). Only the dedup store's error counter has no sample: the memory
store cannot fail (its query must still be valid).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.verifiers.crystallize import sign_hmac
from tests.consumers.harness import ConsumerProcess, free_port, wait_until
from tests.consumers.sinks.http_target import Target, serve
from tests.deploy.support import (
    CONSUMERS_JOB,
    GATEWAY_JOB,
    RULES,
    dashboard_queries,
    grafana_to_promql,
    prometheus,
    referenced_metrics,
)
from tests.gateway.support import GatewayProcess

pytestmark = pytest.mark.prometheus

SECRET = "prometheus-test-secret-8d2f"
ORDERS = 8
# Queries whose metric legitimately has no sample in this scenario: labelled counters
# that appear with their first event (a dedup error; a spooled record, with the spool
# off here; a rate-limited request, with no rate limit; a refused connection). They are
# still run and must be valid queries.
MAY_BE_EMPTY = {
    "webhookgw_consumer_dedup_errors_total",
    "webhookgw_ingress_spooled_total",
    "webhookgw_ingress_rate_limited_total",
    "webhookgw_ingress_http_refused_total",
}


@dataclass
class Stack:
    gateway: GatewayProcess
    consumer: ConsumerProcess
    prometheus_url: str


def write_config(
    path: Path, bootstrap: str, raw: str, dlq: str, out: Path, refusing_url: str
) -> Path:
    verifier = {"type": "crystallize", "mode": "hmac"}
    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "gateway": {"producer": {"ack_timeout_seconds": 1}, "log_format": "text"},
        "sources": [
            {"name": "crystallize", "verifier": verifier, "secrets": ["${WG_PROM_SECRET}"],
             "topic": raw},
            # Its topic does not exist: every request ends in 503 after the ack timeout.
            {"name": "lost", "verifier": verifier, "secrets": ["${WG_PROM_SECRET}"],
             "topic": f"missing.{uuid.uuid4().hex[:12]}"},
        ],
        "consumers": {
            "group": f"prom-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "commit_interval_ms": 200,
            "sinks": {
                "events": {"type": "file", "path": str(out), "fsync": "never"},
                # Refuses every event for good (422): dead letters. (Nothing listening
                # would be an outage: held behind the sink's open circuit instead.)
                "broken": {"type": "http", "url": refusing_url, "timeout_seconds": 2},
            },
            "retry": {"initial_ms": 10, "max_ms": 20, "max_attempts": 2},
            "routes": [{"name": "orders", "match": {"type": "order.*"},
                        "sinks": ["events", "broken"]}],
            "unrouted": "drop",
        },
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def prometheus_server(tmp_path: Path, gateway_admin: int, consumer_admin: int) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": GATEWAY_JOB,
             "static_configs": [{"targets": [f"127.0.0.1:{gateway_admin}"]}]},
            {"job_name": CONSUMERS_JOB,
             "static_configs": [{"targets": [f"127.0.0.1:{consumer_admin}"]}]},
        ],
    }  # fmt: skip
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [prometheus(), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def send_traffic(gw: GatewayProcess) -> None:
    base = gw.url + "/webhooks/crystallize"
    async with httpx.AsyncClient(timeout=10) as client:

        async def post(url: str, body: bytes, signature: str) -> int:
            headers = {"x-crystallize-signature": signature, "content-type": "application/json"}
            return (await client.post(url, content=body, headers=headers)).status_code

        orders = [b'{"order":{"get":{"id":"ord-%d"}}}' % i for i in range(ORDERS)]
        for body in orders:
            assert await post(base + "?concern=order&event=created", body,
                              sign_hmac(SECRET, body)) == 202  # fmt: skip
        # The provider redelivers the first one: same bytes, same event id.
        assert await post(base + "?concern=order&event=created", orders[0],
                          sign_hmac(SECRET, orders[0])) == 202  # fmt: skip
        item = b'{"item":{"get":{"id":"item-1"}}}'
        assert await post(base + "?concern=item&event=published", item,
                          sign_hmac(SECRET, item)) == 202  # fmt: skip
        for _ in range(2):
            assert await post(base, orders[1], sign_hmac("wrong-secret", orders[1])) == 401
        lost = gw.url + "/webhooks/lost"
        assert await post(lost, orders[2], sign_hmac(SECRET, orders[2])) == 503


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    tmp = tmp_path_factory.mktemp("prometheus")
    raw, dlq = f"prom-raw.{uuid.uuid4().hex[:12]}", f"prom-dlq.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(raw, 3, 1), NewTopic(dlq, 1, 1)])
    # Each delivery to the broken sink: first a 503 (a retry), then a 422 (a dead letter).
    refusing = Target()
    refusing.answer(*([503, 422] * ORDERS * 2))
    serving = contextlib.contextmanager(serve)(refusing)
    serving.__enter__()
    config = write_config(
        tmp / "config.yaml",
        kafka_bootstrap,
        raw,
        dlq,
        tmp / "events.jsonl",
        refusing.url + "/hook",
    )
    gw = GatewayProcess(config, env={"WG_PROM_SECRET": SECRET})
    consumer = ConsumerProcess(config, tmp / "consumer.log")
    try:
        await gw.wait_healthy()
        consumer.start()
        await consumer.wait_ready()
        with prometheus_server(tmp, gw.admin_port, consumer.admin_port) as url:
            await send_traffic(gw)

            async def delivered() -> bool:
                ok = await consumer.metric(
                    "webhookgw_consumer_deliveries_total", sink="events", outcome="success"
                )
                dead = await consumer.metric("webhookgw_consumer_dead_lettered_total")
                return ok >= ORDERS and dead >= ORDERS

            await wait_until(delivered, 60, "deliveries to the file sink and the DLQ")
            yield Stack(gw, consumer, url)
    finally:
        consumer.stop_quietly()
        gw.stop()
        serving.__exit__(None, None, None)
        await admin.delete_topics([raw, dlq])
        await admin.close()


async def query(client: httpx.AsyncClient, url: str, promql: str) -> list[Any]:
    r = await client.get(url + "/api/v1/query", params={"query": promql})
    body = r.json()
    assert r.status_code == 200, (promql, body)
    assert body["status"] == "success", (promql, body)
    result: list[Any] = body["data"]["result"]
    return result


async def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = [(title, grafana_to_promql(expr, "1m")) for title, expr in dashboard_queries()]
    must_have = [(t, q) for t, q in queries if not any(name in q for name in MAY_BE_EMPTY)]
    may_be_empty = [(t, q) for t, q in queries if (t, q) not in must_have]
    assert may_be_empty, "MAY_BE_EMPTY names no dashboard query: remove it"
    async with httpx.AsyncClient(timeout=10) as client:

        async def empty() -> list[str]:
            return [
                f"{t}: {q}"
                for t, q in must_have
                if not await query(client, stack.prometheus_url, q)
            ]

        async def all_have_data() -> bool:
            return not await empty()

        try:
            await wait_until(all_have_data, 60, "data for every dashboard query", interval=1)
        except AssertionError:
            raise AssertionError("queries without data:\n" + "\n".join(await empty())) from None
        # The others are valid queries (status success) even without samples.
        for _, q in may_be_empty:
            await query(client, stack.prometheus_url, q)


async def test_the_rules_load_and_evaluate_on_real_data(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:

        async def evaluated() -> list[dict[str, Any]] | None:
            r = await client.get(stack.prometheus_url + "/api/v1/rules")
            rules = [rule for g in r.json()["data"]["groups"] for rule in g["rules"]]
            done = rules and all(rule.get("lastEvaluation", "").startswith("2") and
                                 not rule["lastEvaluation"].startswith("0001")
                                 for rule in rules)  # fmt: skip
            return rules if done else None

        rules = await wait_until(evaluated, 30, "one evaluation of every rule", interval=0.5)
        expected = yaml.safe_load(RULES.read_text())["groups"]
        assert len(rules) == sum(len(g["rules"]) for g in expected)
        broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not broken
        # The SLO recording rule has data: events did reach a sink.
        slow = await query(client, stack.prometheus_url, "webhookgw:e2e_slow_ratio:rate5m")
        assert {s["metric"]["sink"] for s in slow} == {"events"}


async def test_every_metric_the_dashboard_and_rules_name_is_exported(stack: Stack) -> None:
    exported: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as client:
        for url in (stack.gateway.admin_url, stack.consumer.url):
            text = (await client.get(url + "/metrics")).text
            for family in text_string_to_metric_families(text):
                exported.add(family.name)
                exported.update(sample.name for sample in family.samples)
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
                exported.update(family.name + s for s in suffixes.get(family.type, []))
    used = referenced_metrics()
    assert len(used) > 15
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"named by the dashboard/rules but not exported: {missing}"
