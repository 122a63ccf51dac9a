"""Shared by the deploy tests: where the artefacts are, the CLI as it answers
``--help``, the PromQL the dashboard and the rules use, and the external tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests import services

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "webhook-gateway.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "webhook-gateway.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "webhook-gateway.json"
CHART = DEPLOY / "helm" / "webhook-gateway"
COMPOSE = DEPLOY / "compose.yaml"
QUICKSTART = DEPLOY / "config" / "quickstart.yaml"

GATEWAY_JOB = "webhook-gateway"
CONSUMERS_JOB = "webhook-consumers"

# A metric name in PromQL; recording-rule names (with ':') and `up` are not ours.
_METRIC = re.compile(r"\b(webhookgw_[a-z0-9_]+)")


# -- the CLI, as a user sees it ------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """What ``python -m PACKAGE SUBCOMMAND --help`` says: options and their defaults."""

    options: frozenset[str]
    defaults: dict[str, str]


@cache
def cli(package: str, *subcommand: str) -> Command:
    res = subprocess.run(
        [sys.executable, "-m", package, *subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    text = res.stdout
    options = frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    defaults: dict[str, str] = {}
    # argparse help: "  --admin-port PORT   port of ... (default 8082)"; the help of one
    # option may wrap onto following lines, up to the next option.
    for block in re.split(r"\n(?=\s{2}-)", text):
        names = re.findall(r"^\s*(?:-\w, )?(--[a-z][a-z0-9-]*)", block)
        found = re.search(r"\(default:? ([^),]+)\)", block)
        if names and found:
            defaults[names[0]] = found.group(1).strip()
    return Command(options, defaults)


def parse_invocation(argv: list[str]) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """``["python", "-m", "gateway", "serve", "--port", "8080"]`` ->
    ``("gateway", ("serve",), {"--port": "8080"})``. Every option here takes a value."""
    assert argv[:2] == ["python", "-m"], f"expected `python -m ...`, got {argv}"
    package, rest = argv[2], argv[3:]
    sub: list[str] = []
    while rest and not rest[0].startswith("-"):
        sub.append(rest.pop(0))
    opts: dict[str, str] = {}
    while rest:
        flag = rest.pop(0)
        assert flag.startswith("--"), f"unexpected argument {flag!r} in {argv}"
        if "=" in flag:
            name, value = flag.split("=", 1)
        else:
            assert rest, f"{flag} without a value in {argv}"
            name, value = flag, rest.pop(0)
        opts[name] = value
    return package, tuple(sub), opts


def check_invocation(argv: list[str]) -> dict[str, str]:
    """Assert that the CLI accepts ``argv``'s options; return every option's effective
    value (given, or the default ``--help`` names)."""
    package, sub, opts = parse_invocation(argv)
    command = cli(package, *sub)
    unknown = set(opts) - command.options
    assert not unknown, f"{' '.join(argv)}: options {sorted(unknown)} unknown to the CLI"
    return {**command.defaults, **opts}


# -- PromQL in the dashboard and the rules --------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in panels(dashboard()) for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (dashboard panel titles, rule names)."""
    used: dict[str, set[str]] = {}
    for title, expr in dashboard_queries():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"dashboard panel {title!r}")
    for rule in rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"rule {rule.get('alert') or rule['record']}")
    return used


# The dashboard's variables, at their "All" value.
DASHBOARD_VARIABLES = ("namespace", "job", "source", "sink")


def grafana_to_promql(expr: str, rate_interval: str) -> str:
    expr = expr.replace("$__rate_interval", rate_interval)
    for name in DASHBOARD_VARIABLES:
        expr = expr.replace(f"${name}", ".*")
    return expr


# -- external tools ------------------------------------------------------------------


def tool(name: str, install_hint: str) -> str:
    """The path of ``name``; skipped (failed under CI=true) when it is missing."""
    found = shutil.which(name) or _cached(name)
    if found is None:
        services.unavailable(name, f"not found; {install_hint}")
        raise AssertionError("unreachable")  # unavailable() skips or fails
    return found


def _cached(name: str) -> str | None:
    path = ROOT / ".cache" / "bin" / name
    return str(path) if os.access(path, os.X_OK) else None


def promtool() -> str:
    return tool("promtool", "run `deploy/local/prometheus.sh install` (Debian package prometheus)")


def prometheus() -> str:
    return tool(
        "prometheus", "run `deploy/local/prometheus.sh install` (Debian package prometheus)"
    )


def helm() -> str:
    return tool("helm", "run `deploy/local/helm.sh install` (builds it with Go)")


def load_yaml_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]
