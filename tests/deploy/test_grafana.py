"""The dashboard JSON and Grafana's provisioning files."""

from __future__ import annotations

import re

import yaml

from tests.deploy.support import COMPOSE, DEPLOY, dashboard, metric_names, panels

PROVISIONING = DEPLOY / "grafana" / "provisioning"

# Issue 6's panel list, each with the metric that must be plotted for it.
REQUIRED_PANELS = {
    "ingress rate by source and status": "webhookgw_ingress_requests_total",
    "verification failures by reason": "webhookgw_ingress_verification_failures_total",
    "ack latency p50/p99": "webhookgw_ingress_request_duration_seconds_bucket",
    "Kafka produce latency": "webhookgw_ingress_produce_duration_seconds_bucket",
    "503s": "webhookgw_ingress_produce_failures_total",
    "consumer throughput": "webhookgw_consumer_consumed_total",
    "lag per partition": "webhookgw_consumer_lag",
    "duplicates skipped": "webhookgw_consumer_duplicates_skipped_total",
    "deliveries and errors per sink": "webhookgw_consumer_deliveries_total",
    "retries": "webhookgw_consumer_retries_total",
    "DLQ": "webhookgw_consumer_dead_lettered_total",
    "end-to-end latency": "webhookgw_consumer_end_to_end_latency_seconds_bucket",
    "spool backlog": "webhookgw_ingress_spool_backlog_records",
    "spooled": "webhookgw_ingress_spooled_total",
    "rate limiting": "webhookgw_ingress_rate_limited_total",
    "HTTP refusals": "webhookgw_ingress_http_refused_total",
    "readiness": "webhookgw_ingress_ready",
    "consumer lag in time": "webhookgw_consumer_lag_seconds",
    "CPU": "process_cpu_seconds_total",
    "RSS": "process_resident_memory_bytes",
}


def test_dashboard_plots_every_panel_the_issue_lists() -> None:
    exprs = [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]
    plotted = {name for e in exprs for name in metric_names(e)}
    plotted |= {name for e in exprs for name in re.findall(r"\bprocess_[a-z_]+", e)}
    missing = {what: m for what, m in REQUIRED_PANELS.items() if m not in plotted}
    assert not missing, missing


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] == "webhook-gateway"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
    # Panels must not overlap on the 24-column grid.
    cells: set[tuple[int, int]] = set()
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_datasource_variable_defaults_to_the_provisioned_source() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (ds,) = source["datasources"]
    assert variables["datasource"]["current"]["value"] == ds["uid"]
    assert variables["datasource"]["query"] == ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"


def test_compose_mounts_what_provisioning_reads() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = dict(
        (v.split(":")[1], v.split(":")[0]) for v in compose["services"]["grafana"]["volumes"]
    )
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "webhook-gateway.yaml").read_text())
    (prov,) = provider["providers"]
    path = prov["options"]["path"]
    assert mounts[path] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == f"{path}/webhook-gateway.json"


def test_variables_scope_every_panel() -> None:
    """namespace, job, source and sink are variables, and every query honours the ones
    its metric has (namespace and job everywhere; source on ingress metrics by source;
    sink on consumer metrics by sink)."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert {"datasource", "namespace", "job", "source", "sink"} <= set(variables)
    for name in ("namespace", "job", "source", "sink"):
        v = variables[name]
        assert v["includeAll"], name
        assert v["allValue"] == ".*", name  # also matches a series without the label
    for p in panels(dashboard()):
        for t in p.get("targets", []):
            expr = t["expr"]
            assert 'namespace=~"$namespace"' in expr, (p["title"], expr)
            if "by (source" in expr or "by (le, source" in expr:
                assert 'source=~"$source"' in expr, (p["title"], expr)
            if "by (sink" in expr or "by (le, sink" in expr:
                assert 'sink=~"$sink"' in expr, (p["title"], expr)
