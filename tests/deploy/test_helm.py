"""The Helm chart, rendered offline: valid Kubernetes objects (kubernetes-validate,
strict), commands/ports/probes that agree with the CLI and the admin apps, config
that each process accepts, and the guards (replicas vs partitions, grace periods)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumers.config import load_config
from gateway import config as gwconfig
from gateway.app import IngressState
from gateway.server import create_admin_app
from tests import services
from tests.deploy.support import (
    CHART,
    CONSUMERS_JOB,
    DASHBOARD,
    GATEWAY_JOB,
    RULES,
    check_invocation,
    helm,
    load_yaml_all,
    promtool,
)
from tests.gateway.support import FakeProducer
from webhook_common.admin import admin_app

KUBE_VERSION = "1.31.0"
MONITORING = "monitoring.coreos.com/v1"
ALL_ON = {
    "serviceMonitor.enabled": "true",
    "podMonitor.enabled": "true",
    "prometheusRule.enabled": "true",
    "grafanaDashboard.enabled": "true",
}


def render(sets: dict[str, str] | None = None, *, ok: bool = True) -> str:
    args = [helm(), "template", "rel", str(CHART), "--namespace", "hooks",
            "--kube-version", KUBE_VERSION]  # fmt: skip
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if ok:
        assert res.returncode == 0, res.stderr
        return res.stdout
    assert res.returncode != 0, "expected the chart to refuse these values"
    return res.stderr


def objects(sets: dict[str, str] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in load_yaml_all(render(sets))}


def one(objs: dict[tuple[str, str], dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    found = [o for (k, n), o in objs.items() if k == kind and n.endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def argv(c: dict[str, Any]) -> list[str]:
    return [*c["command"], *c["args"]]


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize("sets", [{}, {"config.gateway.spool.enabled": "true", **ALL_ON}])
def test_helm_lint_strict(sets: dict[str, str]) -> None:
    args = [helm(), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[WARNING]" not in res.stdout, res.stdout


def test_rendered_objects_are_valid_kubernetes() -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        services.unavailable("kubernetes-validate", "pip install kubernetes-validate")
        raise
    objs = objects(ALL_ON)
    core = [o for o in objs.values() if o["apiVersion"] != MONITORING]
    assert {o["kind"] for o in core} >= {
        "Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "Job",
    }  # fmt: skip
    for obj in core:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_monitoring_is_off_by_default_and_on_when_asked() -> None:
    kinds = {k for k, _ in objects()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert {k for k, _ in objects(ALL_ON)} >= {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_gateway_command_ports_and_probes_agree_with_the_cli() -> None:
    objs = objects()
    c = container(one(objs, "Deployment", "-gateway"))
    opts = check_invocation(argv(c))
    assert argv(c)[2:4] == ["gateway", "serve"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": int(opts["--port"]), "admin": int(opts["--admin-port"])}
    assert env(c)["ADMIN_PORT"] == opts["--admin-port"]
    routes = _routes(create_admin_app(IngressState(), FakeProducer(), CollectorRegistry()))
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert {"/readyz", "/healthz", "/metrics"} <= routes
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["config"]
    assert opts["--config"] == f"{mount}/config.yaml"


def test_consumers_command_ports_and_probes_agree_with_the_cli() -> None:
    objs = objects()
    c = container(one(objs, "Deployment", "-consumers"))
    opts = check_invocation(argv(c))
    assert argv(c)[2:4] == ["consumers", "run"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "admin": int(opts["--admin-port"])
    }
    assert env(c)["ADMIN_PORT"] == opts["--admin-port"]
    routes = _routes(admin_app(CollectorRegistry()))  # the admin app the consumer serves
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "admin"}
        assert path in routes
    assert "CRYSTALLIZE_SIGNATURE_SECRET" not in env(c)


def test_topics_job_runs_topics_create_before_install_and_upgrade() -> None:
    objs = objects()
    job = one(objs, "Job", "-topics")
    c = job["spec"]["template"]["spec"]["containers"][0]
    check_invocation(argv(c))
    assert argv(c)[2:5] == ["gateway", "topics", "create"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Its config comes from a hook ConfigMap created before it (lower weight).
    cm = one(objs, "ConfigMap", "-topics")
    assert int(cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def _routes(app: Any) -> set[str]:
    return {getattr(r, "path", "") for r in app.routes}


def test_each_configmap_is_accepted_by_its_process(tmp_path: Path) -> None:
    objs = objects()
    gw_file = tmp_path / "gateway.yaml"
    gw_file.write_text(one(objs, "ConfigMap", "-gateway")["data"]["config.yaml"])
    gw_env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "CRYSTALLIZE_SIGNATURE_SECRET": "s" * 32}
    cfg = gwconfig.load_config(gw_file, gw_env)
    assert [s.name for s in cfg.sources] == ["crystallize"]
    c_file = tmp_path / "consumers.yaml"
    c_file.write_text(one(objs, "ConfigMap", "-consumers")["data"]["config.yaml"])
    # The consumers' config loads without the signing secret in the environment.
    c_env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "REDIS_URL": "redis://redis:6379/0"}
    settings = load_config(c_file, c_env)
    assert settings.consumers.topics == ["webhooks.raw"]
    assert "sources" not in yaml.safe_load(c_file.read_text())


def test_secrets_are_references_only() -> None:
    objs = objects()
    assert not [k for k, _ in objs if k == "Secret"]
    c = container(one(objs, "Deployment", "-gateway"))
    ref = env(c)["CRYSTALLIZE_SIGNATURE_SECRET"]
    assert ref == {"secretKeyRef": {"name": "webhook-gateway-signing", "key": "crystallize"}}


def test_termination_grace_is_above_the_shutdown_grace() -> None:
    objs = objects()
    values = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    gw = one(objs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    need = values["gateway"]["shutdown_grace_seconds"] + values["gateway"]["shutdown_delay_seconds"]
    assert gw["terminationGracePeriodSeconds"] > need
    cs = one(objs, "Deployment", "-consumers")["spec"]["template"]["spec"]
    assert cs["terminationGracePeriodSeconds"] > values["consumers"]["shutdown_grace_seconds"]
    # A longer grace in the config moves the pod's grace with it.
    longer = objects({"config.consumers.shutdown_grace_seconds": "120"})
    cs = one(longer, "Deployment", "-consumers")["spec"]["template"]["spec"]
    assert cs["terminationGracePeriodSeconds"] > 120
    # An explicit grace at or below the shutdown grace is refused.
    err = render({"consumers.terminationGracePeriodSeconds": "30"}, ok=False)
    assert "consumers.terminationGracePeriodSeconds" in err
    err = render({"gateway.terminationGracePeriodSeconds": "20"}, ok=False)
    assert "gateway.terminationGracePeriodSeconds" in err


def test_consumer_replicas_are_bounded_by_partitions() -> None:
    assert (
        one(objects({"consumers.replicas": "6"}), "Deployment", "-consumers")["spec"]["replicas"]
        == 6
    )
    err = render({"consumers.replicas": "7"}, ok=False)
    assert "consumers.replicas (7) is above the 6 partition(s)" in err


def test_defaults_keep_the_delivery_guarantees() -> None:
    """Several consumer replicas share one dedup store; topics keep two in-sync copies."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["consumers"]["replicas"] > 1
    assert values["config"]["consumers"]["dedup"]["store"] == "redis"
    objs = objects()
    c = container(one(objs, "Deployment", "-consumers"))
    assert env(c)["REDIS_URL"] == {
        "secretKeyRef": {"name": "webhook-consumers", "key": "redis-url"}
    }
    for topic in values["config"]["topics"]:
        if topic["replication_factor"] >= 3:
            assert int(topic["config"]["min.insync.replicas"]) >= 2, topic["name"]
    err = render({"config.consumers.dedup.store": "memory"}, ok=False)
    assert "consumers.replicas (3) with config.consumers.dedup.store memory" in err
    one_replica = objects({"config.consumers.dedup.store": "memory", "consumers.replicas": "1"})
    assert one(one_replica, "Deployment", "-consumers")["spec"]["replicas"] == 1


def test_gateway_hpa_pdb_and_service_select_the_gateway_pods() -> None:
    objs = objects()
    deployment = one(objs, "Deployment", "-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(objs, "HorizontalPodAutoscaler", "-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = one(objs, "PodDisruptionBudget", "-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc = one(objs, "Service", "-gateway")
    admin = one(objs, "Service", "-gateway-admin")
    for service in (svc, admin):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    # The webhook Service carries webhooks only; the admin port has its own ClusterIP one.
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["admin"]
    assert admin["spec"]["type"] == "ClusterIP"
    assert {p["name"] for p in container(deployment)["ports"]} == {"http", "admin"}
    # Without autoscaling, the Deployment carries the replica count.
    fixed = objects({"gateway.autoscaling.enabled": "false", "gateway.replicas": "3"})
    assert one(fixed, "Deployment", "-gateway")["spec"]["replicas"] == 3
    assert not [k for k, _ in fixed if k == "HorizontalPodAutoscaler"]


def test_monitors_scrape_the_admin_ports_with_the_rules_job_names() -> None:
    objs = objects(ALL_ON)
    svc = one(objs, "Service", "-gateway-admin")
    sm = one(objs, "ServiceMonitor", "-gateway")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    webhooks = one(objs, "Service", "-gateway")["metadata"]["labels"]
    assert not sm["spec"]["selector"]["matchLabels"].items() <= webhooks.items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == GATEWAY_JOB
    pm = one(objs, "PodMonitor", "-consumers")
    pod = one(objs, "Deployment", "-consumers")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod.items()
    assert pod[pm["spec"]["jobLabel"]] == CONSUMERS_JOB
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


def test_prometheus_rule_and_dashboard_are_the_repository_files(tmp_path: Path) -> None:
    objs = objects(ALL_ON)
    rule = one(objs, "PrometheusRule", "rel-webhook-gateway")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    # The chart reads copies (Helm only sees files inside the chart): keep them equal.
    assert (CHART / "files" / RULES.name).read_text() == RULES.read_text()
    assert (CHART / "files" / DASHBOARD.name).read_text() == DASHBOARD.read_text()
    dash = one(objs, "ConfigMap", "-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash["data"]["webhook-gateway.json"].strip() == DASHBOARD.read_text().strip()
    # promtool accepts the rendered groups as they are.
    path = tmp_path / "rendered.rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    res = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PodMonitor", "PrometheusRule"])
def test_monitoring_objects_have_the_crd_shape(kind: str) -> None:
    # Not in kubernetes-validate's schemas (they are CRDs): check the required fields.
    (obj,) = [o for (k, _), o in objects(ALL_ON).items() if k == kind]
    assert obj["apiVersion"] == MONITORING
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    required = {
        "ServiceMonitor": {"selector", "endpoints", "jobLabel"},
        "PodMonitor": {"selector", "podMetricsEndpoints", "jobLabel"},
        "PrometheusRule": {"groups"},
    }[kind]
    assert required <= set(spec), required - set(spec)


def test_pods_run_as_a_service_account_without_a_token_and_have_startup_probes() -> None:
    objs = objects()
    account = one(objs, "ServiceAccount", "")
    assert account["automountServiceAccountToken"] is False
    for suffix in ("-gateway", "-consumers"):
        pod = one(objs, "Deployment", suffix)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        c = container(one(objs, "Deployment", suffix))
        startup = c["startupProbe"]
        assert startup["httpGet"] == {"path": "/healthz", "port": "admin"}
        # Long enough for a Kafka that is still being reached (the process waits for it).
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
        assert "initialDelaySeconds" not in c["livenessProbe"]
    external = objects({"serviceAccount.create": "false", "serviceAccount.name": "shared"})
    assert not [k for k, _ in external if k == "ServiceAccount"]
    pod = one(external, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "shared"


def test_consumers_have_a_disruption_budget_of_one_pod() -> None:
    objs = objects()
    pdb = one(objs, "PodDisruptionBudget", "-consumers")
    pod = one(objs, "Deployment", "-consumers")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_network_policies_open_the_webhook_port_and_keep_the_admin_ports_internal() -> None:
    import kubernetes_validate

    objs = objects()
    gateway = one(objs, "NetworkPolicy", "-gateway")
    consumers = one(objs, "NetworkPolicy", "-consumers")
    pods = {
        name: one(objs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        for name in ("-gateway", "-consumers")
    }
    assert gateway["spec"]["podSelector"]["matchLabels"].items() <= pods["-gateway"].items()
    assert consumers["spec"]["podSelector"]["matchLabels"].items() <= pods["-consumers"].items()
    webhook, admin = gateway["spec"]["ingress"]
    assert webhook["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "from" not in webhook  # providers send from anywhere
    assert admin["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert admin["from"] == [{"podSelector": {}}]  # this namespace only, by default
    assert consumers["spec"]["ingress"] == [admin]
    for policy in (gateway, consumers):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    assert not [k for k, _ in objects({"networkPolicy.enabled": "false"}) if k == "NetworkPolicy"]


def test_ingress_and_http_route_route_the_webhook_paths_to_the_webhook_service() -> None:
    import kubernetes_validate

    objs = objects({"gateway.ingress.enabled": "true", "gateway.httpRoute.enabled": "true"})
    service = one(objs, "Service", "-gateway")["metadata"]["name"]
    ingress = one(objs, "Ingress", "-gateway")
    kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/webhooks/crystallize"
    assert path["backend"]["service"] == {"name": service, "port": {"name": "http"}}
    route = one(objs, "HTTPRoute", "-gateway")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    (route_rule,) = route["spec"]["rules"]
    assert route_rule["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/webhooks/crystallize"}}
    ]
    assert route_rule["backendRefs"] == [{"name": service, "port": 80}]
    assert not [k for k, _ in objects() if k in ("Ingress", "HTTPRoute")]


def test_keda_scales_the_consumers_on_lag_within_the_partitions() -> None:
    objs = objects({"consumers.keda.enabled": "true"})
    scaled = one(objs, "ScaledObject", "-consumers")
    deployment = one(objs, "Deployment", "-consumers")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["spec"]["maxReplicaCount"] == 6  # webhooks.raw's partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "webhook-consumers"
    assert trigger["metadata"]["topic"] == "webhooks.raw"
    assert trigger["metadata"]["offsetResetPolicy"] == "earliest"
    refused = render(
        {"consumers.keda.enabled": "true", "config.consumers.dedup.store": "memory"}, ok=False
    )
    assert "dedup.store memory" in refused


def test_both_components_spread_over_nodes_and_zones_selecting_their_own_pods() -> None:
    objs = objects()
    for suffix in ("-gateway", "-consumers"):
        template = one(objs, "Deployment", suffix)["spec"]["template"]
        constraints = template["spec"]["topologySpreadConstraints"]
        keys = [c["topologyKey"] for c in constraints]
        assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        for c in constraints:
            assert c["whenUnsatisfiable"] == "ScheduleAnyway"  # never blocks a rollout
            assert (
                c["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
            )
    off = objects({"gateway.topologySpreadConstraints": "null"})
    assert (
        "topologySpreadConstraints"
        not in one(off, "Deployment", "-gateway")["spec"]["template"]["spec"]
    )


def test_pods_carry_a_digest_of_the_secrets_they_read() -> None:
    """Looked up at install/upgrade (empty without a cluster): a changed Secret changes
    the pod template, so `helm upgrade` rolls the pods instead of leaving old values."""
    objs = objects()
    digests = {}
    for suffix in ("-gateway", "-consumers"):
        annotations = one(objs, "Deployment", suffix)["spec"]["template"]["metadata"]["annotations"]
        digests[suffix] = annotations["checksum/secrets"]
        assert len(digests[suffix]) == 64
    # Which secrets are read is part of the digest.
    other = objects(
        {
            "signingSecrets[0].env": "CRYSTALLIZE_SIGNATURE_SECRET",
            "signingSecrets[0].secretName": "another",
            "signingSecrets[0].key": "crystallize",
        }
    )
    moved = one(other, "Deployment", "-gateway")["spec"]["template"]["metadata"]["annotations"]
    assert moved["checksum/secrets"] != digests["-gateway"]


@pytest.mark.parametrize(
    ("sets", "said"),
    [
        ({"gateway.replica": "3"}, "replica"),  # a typo of replicas
        ({"consumers.replicas": "three"}, "consumers.replicas"),
        ({"gateway.adminPort": "70000"}, "adminPort"),
        ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
    ],
)
def test_the_values_schema_refuses_typos_and_wrong_types(sets: dict[str, str], said: str) -> None:
    assert said in render(sets, ok=False)


def test_with_the_spool_the_gateway_is_a_stateful_set_with_a_volume_per_pod(tmp_path: Path) -> None:
    import kubernetes_validate

    assert one(objects(), "Deployment", "-gateway")  # without the spool: a Deployment
    objs = objects({"config.gateway.spool.enabled": "true", "gateway.spool.size": "5Gi"})
    assert not [n for k, n in objs if k == "Deployment" and n.endswith("-gateway")]
    sts = one(objs, "StatefulSet", "-gateway")
    kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    mounts = {m["name"]: m["mountPath"] for m in container(sts)["volumeMounts"]}
    # The gateway's config points the journal at that volume, and the process accepts it.
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text(one(objs, "ConfigMap", "-gateway")["data"]["config.yaml"])
    env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "CRYSTALLIZE_SIGNATURE_SECRET": "s" * 32}
    cfg = gwconfig.load_config(cfg_file, env)
    assert cfg.gateway.spool.enabled
    assert str(cfg.gateway.spool.path) == mounts["spool"]
    hpa = one(objs, "HorizontalPodAutoscaler", "-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]
    }  # fmt: skip
    assert sts["spec"]["serviceName"] == one(objs, "Service", "-gateway-admin")["metadata"]["name"]


def test_alerts_get_runbook_urls_under_the_configured_base() -> None:
    base = "https://github.com/example/webhook-gateway/blob/v0.1.0/"
    objs = objects({"prometheusRule.enabled": "true", "prometheusRule.runbookBaseUrl": base})
    rule = one(objs, "PrometheusRule", "")
    alerting = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerting
    for r in alerting:
        runbook = r["annotations"]["runbook"]
        assert r["annotations"]["runbook_url"] == base + runbook, r["alert"]
    plain = one(objects({"prometheusRule.enabled": "true"}), "PrometheusRule", "")
    assert all(
        "runbook_url" not in r.get("annotations", {})
        for g in plain["spec"]["groups"]
        for r in g["rules"]
    )
