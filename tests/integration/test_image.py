"""The container image as it runs: built from the Dockerfile with podman on a base made of
Debian packages (deploy/local/image.sh), started with a read-only root on the host
network against the real Kafka. The gateway runs the Dockerfile's CMD and the consumer
the command its header documents; both get ready, a signed webhook is accepted (202) and
lands in the file sink in the image's writable directory, and the HEALTHCHECK passes. A
path or permission mistake in the image (a file outside the writable directory, a config
the non-root user cannot read) fails here.

The base image and the build layers are cached: a rebuild after a code change takes
about 25 s, the first build (Debian packages, the locked dependencies) about a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.consumers.harness import read_jsonl, wait_until
from tests.deploy.dockerfile import documented_runs, exec_form, parse
from tests.gateway.support import free_port
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "image.sh"
IMAGE = os.environ.get("WG_IMAGE", "localhost/webhook-gateway:dev")
SECRET = "image-test-secret-0123456789abcdef"

pytestmark = pytest.mark.timeout(1200)


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "WG_IMAGE": IMAGE},
    )


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (cached) from this checkout; fails under CI when podman cannot
    build or run containers here, skips elsewhere."""
    if os.environ.get("WG_NO_PODMAN"):
        unavailable("podman", "WG_NO_PODMAN is set")
    if shutil.which("podman") is None and os.geteuid() != 0:
        unavailable("podman", "not installed (apt-get install podman mmdebstrap runc)")
    built = _script("build", timeout=1100)
    if built.returncode != 0:
        checked = _script("check", timeout=120)
        unavailable(
            "podman",
            f"deploy/local/image.sh build failed:\n{built.stderr[-3000:]}\n{checked.stderr}",
        )
    return IMAGE


def _replace(argv: list[str], option: str, value: str) -> list[str]:
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


class Container:
    """``image.sh run -d`` under a unique name; removed by :meth:`remove`."""

    def __init__(self, role: str, options: list[str], argv: list[str]) -> None:
        self.name = f"wg-test-{role}-{uuid.uuid4().hex[:8]}"
        started = _script("run", "-d", "--name", self.name, *options, "--", *argv, timeout=120)
        assert started.returncode == 0, started.stderr

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def logs(self) -> str:
        result = self.podman("logs", self.name)
        return (result.stdout + result.stderr)[-4000:]

    def running(self) -> bool:
        state = self.podman("inspect", "--format", "{{.State.Running}}", self.name)
        return state.stdout.strip() == "true"

    def remove(self) -> None:
        self.podman("rm", "-f", "-t", "10", self.name)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    try:
        yield started
    finally:
        for container in started:
            container.remove()


async def _ready(container: Container, port: int, within: float = 60) -> None:
    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(within):
        while True:
            if not await asyncio.to_thread(container.running):
                logs = await asyncio.to_thread(container.logs)
                raise AssertionError(f"{container.name} stopped:\n{logs}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)


async def test_the_image_runs_gateway_and_consumer_read_only_as_non_root(
    image: str, kafka_bootstrap: str, tmp_path: Path, containers: list[Container]
) -> None:
    _, stages = parse()
    final = stages[-1]
    env = final.env()
    workdir = final.all("WORKDIR")[-1]
    uid, gid = (int(part) for part in final.all("USER")[-1].split(":"))
    (cmd,) = final.all("CMD")
    gateway_argv = exec_form(cmd)
    config = gateway_argv[gateway_argv.index("--config") + 1]
    (consumer_run,) = [run for run in documented_runs() if "consumers" in run]
    consumer_argv = consumer_run[consumer_run.index("IMAGE") + 1 :]
    assert consumer_argv[consumer_argv.index("--config") + 1] == config

    # The image's only writable directory, its WORKDIR, as a volume the user owns (a
    # Kubernetes emptyDir or PVC); everything else is the read-only image.
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, uid, gid)
    data.chmod(0o700)
    common = [
        "-e", f"KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap}",
        "-e", f"CRYSTALLIZE_SIGNATURE_SECRET={SECRET}",
    ]  # fmt: skip

    created = _script(
        "run", "--no-healthcheck", *common, "--",
        "python", "-m", "gateway", "topics", "create", "--config", config,
        timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr

    port, admin, consumer_admin = free_port(), free_port(), free_port()
    gateway_argv = _replace(_replace(gateway_argv, "--port", str(port)), "--admin-port", str(admin))
    gateway = Container(
        "gateway",
        [*common, "-e", f"ADMIN_PORT={admin}"],
        gateway_argv,
    )
    containers.append(gateway)
    consumer = Container(
        "consumer",
        [*common, "-v", f"{data}:{workdir}", "-e", f"ADMIN_PORT={consumer_admin}"],
        _replace(consumer_argv, "--admin-port", str(consumer_admin)),
    )
    containers.append(consumer)
    await _ready(gateway, admin)
    await _ready(consumer, consumer_admin)

    for container in (gateway, consumer):
        inspected = json.loads(container.podman("inspect", container.name).stdout)[0]
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert inspected["Config"]["User"] == f"{uid}:{gid}"
        # The image's HEALTHCHECK, run as the engine runs it.
        health = container.podman("healthcheck", "run", container.name)
        assert health.returncode == 0, health.stdout + health.stderr + container.logs()

    sent = _script(
        "run", "--no-healthcheck", *common, "--",
        "python", "-m", "gateway", "send", "--config", config, "--example", "order",
        "--url", f"http://127.0.0.1:{port}",
        timeout=120,
    )  # fmt: skip
    assert sent.stdout.startswith("202  id="), sent.stdout + sent.stderr + gateway.logs()
    event_id = sent.stdout.split("id=", 1)[1].split()[0]

    # The image's EVENTS_FILE is under its WORKDIR: the volume.
    events_file = env["EVENTS_FILE"]
    assert events_file.startswith(workdir.rstrip("/") + "/"), (events_file, workdir)
    events = data / Path(events_file).relative_to(workdir)
    try:
        await wait_until(
            lambda: any(line["id"] == event_id for line in read_jsonl(events)),
            60,
            f"{event_id} in {events_file}",
        )
    except AssertionError as exc:
        logs = await asyncio.to_thread(consumer.logs)
        raise AssertionError(f"{exc}\n{logs}") from None
    assert events.stat().st_uid == uid


def test_the_image_carries_the_locked_tracing_extra(image: str) -> None:
    """Tracing is one OTEL_* variable away in the image: the SDK and the OTLP/HTTP
    exporter are installed, at the versions of requirements.lock."""
    probe = _script(
        "run", "--no-healthcheck", "--", "python", "-c",
        "from importlib.metadata import version as v; import opentelemetry.sdk.trace, "
        "opentelemetry.exporter.otlp.proto.http.trace_exporter; "
        "print(v('opentelemetry-sdk'), v('opentelemetry-exporter-otlp-proto-http'))",
        timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stdout + probe.stderr
    locked = (ROOT / "requirements.lock").read_text()
    sdk, exporter = probe.stdout.split()[-2:]
    assert f"opentelemetry-sdk=={sdk} " in locked
    assert f"opentelemetry-exporter-otlp-proto-http=={exporter} " in locked
