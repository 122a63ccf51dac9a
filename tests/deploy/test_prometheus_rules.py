"""The alert rules: valid for promtool, unit-tested per alert, covering the issue's list."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.support import (
    CONSUMERS_JOB,
    GATEWAY_JOB,
    ROOT,
    RULE_TESTS,
    RULES,
    SCRAPE_CONFIG,
    alerts,
    promtool,
)

# What issue 6 asks to alert on, by the alert that covers it.
REQUIRED = {
    "gateway not ready": "WebhookGatewayDown",
    "5xx ratio": "WebhookGatewayErrorRatioHigh",
    "503 ratio": "WebhookGatewayUnavailableRatioHigh",
    "verification-failure spike": "WebhookVerificationFailureSpike",
    "consumer lag growing": "WebhookConsumerLagGrowing",
    "DLQ growing": "WebhookDeadLettersGrowing",
    "sink error ratio": "WebhookSinkErrorRatioHigh",
    "end-to-end latency SLO burn (fast)": "WebhookEndToEndLatencyBudgetFastBurn",
    "end-to-end latency SLO burn (slow)": "WebhookEndToEndLatencyBudgetSlowBurn",
    "no gateway ready (aggregate)": "WebhookGatewayNoneReady",
    "consumers absent": "WebhookConsumersAbsent",
    "spool backlog": "WebhookSpoolBacklogStuck",
    "spool full": "WebhookSpoolFull",
    "dedup-store errors": "WebhookDedupStoreErrors",
    "commit failures": "WebhookOffsetCommitFailures",
    "sink circuit open": "WebhookSinkCircuitOpen",
}


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules() -> None:
    res = run("check", "rules", RULES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_unit_tests_pass() -> None:
    res = run("test", "rules", RULE_TESTS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # The same tests against rules whose thresholds are off must fail: the tests check
    # the thresholds, not just that the rules load.
    broken = RULES.read_text().replace("> 0.05", "> 0.5").replace("> 1000", "> 100000")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(broken)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    res = run("test", "rules", tmp_path / "tests" / RULE_TESTS.name)
    assert res.returncode != 0
    assert "WebhookGatewayUnavailableRatioHigh" in res.stdout + res.stderr
    assert "WebhookConsumerLagGrowing" in res.stdout + res.stderr


def test_every_alert_the_issue_lists_exists() -> None:
    defined = alerts()
    missing = {what: name for what, name in REQUIRED.items() if name not in defined}
    assert not missing, missing


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [f"../rules/{RULES.name}"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alerts())
    assert names - fires == set(), "alerts without a test where they fire"
    assert names - silent == set(), "alerts without a test where they stay silent"


def test_alerts_have_severity_summary_and_runbook() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        runbook = rule["annotations"]["runbook"]
        anchor = runbook.split("#", 1)[1]
        # The anchor is a heading of docs/operations.md (GitHub's slug rules).
        headings = [
            line.lstrip("#").strip().lower() for line in docs.splitlines() if line.startswith("#")
        ]
        slugs = {
            "".join(c for c in h if c.isalnum() or c in " -").replace(" ", "-") for h in headings
        }
        assert anchor in slugs, f"{name}: runbook anchor #{anchor} is no heading of operations.md"


def test_rules_select_the_scrape_jobs() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {GATEWAY_JOB, CONSUMERS_JOB}
    text = RULES.read_text()
    assert f'job="{GATEWAY_JOB}"' in text
    assert f'job="{CONSUMERS_JOB}"' in text


def test_scrape_config_is_valid(tmp_path: Path) -> None:
    # promtool resolves rule_files globs; the compose paths do not exist here, so check
    # a copy whose rule glob points at the repository's rules.
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["rule_files"] = [str(RULES.parent / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    res = run("check", "config", path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rules found" in res.stdout


def test_only_aggregate_conditions_page() -> None:
    """Critical alerts are about the whole set of pods (none ready, none answering, a
    ratio or budget over all of them): losing one pod of an autoscaled set is a warning."""
    per_pod = {"WebhookGatewayDown", "WebhookGatewayNotReady", "WebhookConsumersDown"}
    rules = alerts()
    for name in per_pod:
        assert rules[name]["labels"]["severity"] == "warning", name
    for name, rule in rules.items():
        if rule["labels"]["severity"] == "critical":
            expr = rule["expr"]
            # `webhookgw:` series are recording rules, themselves sums over the pods.
            aggregate = ("absent(", "sum by", "webhookgw:")
            assert any(a in expr for a in aggregate), f"{name} pages on one series: {expr}"
