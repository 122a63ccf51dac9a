"""The Dockerfile, read as Docker would (it cannot be built here): stages, user,
healthcheck and command agree with the CLI and the packages in pyproject.toml."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib

from tests.deploy.dockerfile import DOCKERFILE, exec_form, parse
from tests.deploy.support import ROOT, check_invocation, cli


def test_multi_stage_slim_non_root() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    final = stages[-1]
    assert "slim" in final.base, final.base
    users = final.all("USER")
    assert users, "the final stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    # The final stage gets the built virtualenv; it never installs anything itself.
    copies = final.all("COPY")
    assert any(c.startswith(f"--from={stages[0].name}") for c in copies)
    for run in final.all("RUN"):
        assert "pip" not in run, f"the final stage installs packages: {run}"


def test_no_dev_dependencies_in_the_image() -> None:
    _, stages = parse()
    runs = " ".join(run for stage in stages for run in stage.all("RUN"))
    assert "[dev]" not in runs
    assert "-e " not in runs
    assert "pip install --no-deps ." in runs
    # The dependencies come from the lock of [project].dependencies only (test_lock.py).
    assert "pip install --require-hashes -r requirements.lock" in runs
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    for requirement in dev:
        name = re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0]
        assert name not in runs, f"dev dependency {name} named in the Dockerfile"


def test_every_package_is_copied_and_not_ignored() -> None:
    _, stages = parse()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    sources = [
        c.split()[0] for stage in stages for c in stage.all("COPY") if not c.startswith("--")
    ]
    for package in packages:
        assert package in sources, f"package {package} is not copied into the build stage"
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source, ignore), f"{source} is excluded by .dockerignore"
    for secret_ish in (".venv", ".git", "var", "tests", ".cache"):
        assert _ignored(secret_ish, ignore), f"{secret_ish} reaches the build context"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last matching pattern wins; ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if pat == "**" or fnmatch.fnmatch(path, pat) or path == pat:
            ignored = not negate
    return ignored


def test_command_and_ports_agree_with_the_cli() -> None:
    _, stages = parse()
    final = stages[-1]
    (cmd,) = final.all("CMD")
    argv = exec_form(cmd)
    assert argv[:4] == ["python", "-m", "gateway", "serve"]
    effective = check_invocation(argv)
    exposed = {int(p) for e in final.all("EXPOSE") for p in e.split()}
    consumer_admin = int(cli("consumers", "run").defaults["--admin-port"])
    assert {int(effective["--port"]), int(effective["--admin-port"]), consumer_admin} <= exposed
    # The config the command names is the one the image ships.
    assert any(
        c.split()[-1] == effective["--config"] for c in final.all("COPY") if "config.yaml" in c
    )


def test_healthcheck_probes_healthz_on_the_admin_port() -> None:
    _, stages = parse()
    final = stages[-1]
    (check,) = final.all("HEALTHCHECK")
    assert "/healthz" in check
    # The port comes from ADMIN_PORT, whose image default is the gateway's admin port.
    assert "os.environ.get('ADMIN_PORT', '8081')" in check
    env = " ".join(final.all("ENV"))
    assert re.search(r"\bADMIN_PORT=(\d+)", env)
    found = re.search(r"\bADMIN_PORT=(\d+)", env)
    assert found is not None
    assert found.group(1) == cli("gateway", "serve").defaults["--admin-port"] == "8081"
    # The check itself must be valid shell with a Python one-liner that compiles.
    words = shlex.split(check.split("CMD", 1)[1])
    assert words[:2] == ["python", "-c"]
    compile(words[2], "<healthcheck>", "exec")


def test_the_image_config_parses_on_both_sides_and_has_no_development_sink() -> None:
    from consumers.config import load_config as load_consumers
    from gateway.config import load_config as load_gateway

    target = " /etc/webhook-gateway/config.yaml"
    lines = DOCKERFILE.read_text().splitlines()
    copied = [x.split()[1] for x in lines if x.startswith("COPY ") and x.endswith(target)]
    assert copied == ["deploy/config/image.yaml"]
    env = {"CRYSTALLIZE_SIGNATURE_SECRET": "s" * 32}
    path = ROOT / copied[0]
    gateway = load_gateway(path, env=env)
    assert gateway.gateway.log_format == "json"
    consumers = load_consumers(path, env=env)
    types = {name: sink.get("type") for name, sink in consumers.consumers.sinks.items()}
    assert "inspector" not in types.values(), types
    # Writable in the image: its only writable directory, the working directory.
    assert types == {"events_file": "file"}
    assert consumers.consumers.sinks["events_file"]["path"].startswith("/var/lib/webhook-gateway/")


def test_the_image_is_labelled_with_version_revision_and_source_from_build_args() -> None:
    text = DOCKERFILE.read_text()
    runtime = text[text.index("AS runtime") :]
    for arg, label in (("VERSION", "version"), ("REVISION", "revision"), ("SOURCE", "source")):
        assert f"ARG {arg}" in runtime, arg
        assert f'org.opencontainers.image.{label}="${{{arg}}}"' in runtime, label
    plugins = (ROOT / "docs" / "plugins.md").read_text()
    assert "## Installing it in the image" in plugins
    # The documented way restores the image's user after installing as root.
    assert "USER 10001:10001" in plugins
    assert "USER 10001:10001" in runtime
