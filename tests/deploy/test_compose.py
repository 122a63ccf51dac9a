"""deploy/compose.yaml agrees with the CLI, the config and the Prometheus config."""

from __future__ import annotations

import re
from typing import Any

import yaml

from gateway import config as gwconfig
from tests.deploy.support import (
    COMPOSE,
    CONSUMERS_JOB,
    DEPLOY,
    GATEWAY_JOB,
    QUICKSTART,
    SCRAPE_CONFIG,
    check_invocation,
)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def published(svc: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, for "127.0.0.1:HOST:CONTAINER" entries."""
    out: dict[int, int] = {}
    for entry in svc.get("ports", []):
        parts = entry.split(":")
        assert parts[0] == "127.0.0.1", f"{entry}: publish on loopback only"
        out[int(parts[2])] = int(parts[1])
    return out


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """container path -> source."""
    return {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])}


def test_the_services_the_issue_lists() -> None:
    assert set(compose()["services"]) >= {
        "kafka", "topics", "gateway", "consumers", "redis", "postgres", "prometheus", "grafana"
    }  # fmt: skip


def test_kafka_is_kraft_without_auto_created_topics() -> None:
    env = service("kafka")["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "ZOOKEEPER" not in " ".join(env)
    # The address the apps use is the one the broker advertises.
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split("//", 1)[1]
    for name in ("topics", "gateway", "consumers"):
        assert service(name)["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised


def test_gateway_command_ports_and_healthcheck_agree_with_the_cli() -> None:
    gw = service("gateway")
    opts = check_invocation(gw["command"])
    assert gw["command"][2:4] == ["gateway", "serve"]
    assert mounts(gw)[opts["--config"]] == "./config/quickstart.yaml"
    ports = published(gw)
    assert int(opts["--port"]) in ports
    assert int(opts["--admin-port"]) in ports
    assert gw["environment"]["ADMIN_PORT"] == opts["--admin-port"]  # the image's healthcheck


def test_consumers_command_ports_and_healthcheck_agree_with_the_cli() -> None:
    c = service("consumers")
    opts = check_invocation(c["command"])
    assert c["command"][2:4] == ["consumers", "run"]
    assert mounts(c)[opts["--config"]] == "./config/quickstart.yaml"
    assert int(opts["--admin-port"]) in published(c)
    assert c["environment"]["ADMIN_PORT"] == opts["--admin-port"]
    # The file sink writes into the volume, where the image's EVENTS_FILE points.
    assert mounts(c)["/var/lib/webhook-gateway"] == "events"
    assert c["environment"]["EVENTS_FILE"].startswith("/var/lib/webhook-gateway/")
    # Least privilege: the consumers do not get the signing secret.
    assert "CRYSTALLIZE_SIGNATURE_SECRET" not in c["environment"]


def test_topics_is_a_one_shot_the_apps_wait_for() -> None:
    t = service("topics")
    opts = check_invocation(t["command"])
    assert t["command"][2:5] == ["gateway", "topics", "create"]
    assert mounts(t)[opts["--config"]] == "./config/quickstart.yaml"
    assert t["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("gateway", "consumers"):
        assert service(name)["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )


def test_every_variable_the_config_needs_is_set() -> None:
    text = "\n".join(line.split("#", 1)[0] for line in QUICKSTART.read_text().splitlines())
    required = set(re.findall(r"\$\{(\w+)\}", text))  # no default: must be set
    gw_env = service("gateway")["environment"]
    assert required <= set(gw_env), required - set(gw_env)
    # ...and the config validates with those values (compose interpolates the secret).
    env = {k: str(v) for k, v in gw_env.items()}
    env["CRYSTALLIZE_SIGNATURE_SECRET"] = "x" * 32
    cfg = gwconfig.load_config(QUICKSTART, env)
    assert cfg.kafka.bootstrap_servers == gw_env["KAFKA_BOOTSTRAP_SERVERS"]


def test_stop_grace_is_above_the_shutdown_grace() -> None:
    cfg = yaml.safe_load(QUICKSTART.read_text())
    gw = cfg["gateway"]
    need = gw.get("shutdown_grace_seconds", 30) + gw.get("shutdown_delay_seconds", 0)
    assert _seconds(service("gateway")["stop_grace_period"]) > need
    consumer_grace = cfg["consumers"].get("shutdown_grace_seconds", 30)
    assert _seconds(service("consumers")["stop_grace_period"]) > consumer_grace


def _seconds(text: str) -> float:
    found = re.fullmatch(r"(\d+)s", text)
    assert found, text
    return float(found.group(1))


def test_prometheus_scrapes_both_admin_ports() -> None:
    prom = service("prometheus")
    m = mounts(prom)
    assert m["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert m["/etc/prometheus/rules"] == "./prometheus/rules"
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    gw_admin = check_invocation(service("gateway")["command"])["--admin-port"]
    c_admin = check_invocation(service("consumers")["command"])["--admin-port"]
    assert jobs[GATEWAY_JOB]["static_configs"][0]["targets"] == [f"gateway:{gw_admin}"]
    (sd,) = jobs[CONSUMERS_JOB]["dns_sd_configs"]
    assert (sd["names"], str(sd["port"])) == (["consumers"], c_admin)
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"


def test_mounted_files_exist() -> None:
    for name, svc in compose()["services"].items():
        for source in mounts(svc).values():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    assert compose()["x-app"]["build"]["context"] == ".."
    assert (DEPLOY / ".." / compose()["x-app"]["build"]["dockerfile"]).exists()
