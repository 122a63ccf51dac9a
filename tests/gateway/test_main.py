"""The command line as a user runs it: exit codes and one-line errors, no secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.cli import run_module
from tests.gateway.support import free_port

SECRET = "cli-secret-never-printed-31337"
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    if env is None:
        environ.pop("CRYSTALLIZE_SIGNATURE_SECRET", None)
    return run_module("gateway", *args, env=environ, cwd=ROOT)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_bad_config_names_key_and_expectation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "sources": [
                {
                    "name": "crystallize",
                    "verifier": {"type": "crystallize", "mode": "sha1"},
                    "secrets": [SECRET],
                    "body_limit": "huge",
                }
            ]
        },
    )
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert (
        "sources[0].body_limit: got 'huge': expected input should be a valid integer"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr


def test_check_config_bad_verifier_option(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "sources": [
                {
                    "name": "crystallize",
                    "verifier": {"type": "crystallize", "mode": "sha1"},
                    "secrets": [SECRET],
                }
            ]
        },
    )
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert "sources[0].verifier.mode: got 'sha1': expected" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_check_config_missing_file_and_unset_secret(tmp_path: Path) -> None:
    missing = run("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr
    quickstart = str(ROOT / "deploy/config/quickstart.yaml")
    unset = run("check-config", quickstart)
    assert unset.returncode == 2
    assert "sources[0].secrets[0]: ${CRYSTALLIZE_SIGNATURE_SECRET} is not set" in unset.stderr
    empty = run("check-config", quickstart, env={"CRYSTALLIZE_SIGNATURE_SECRET": ""})
    assert empty.returncode == 2
    assert "sources[0].verifier: crystallize verifier: secrets[0]: must not be empty" in (
        empty.stderr
    )


def test_check_config_quickstart_ok_on_both_sides() -> None:
    result = run(
        "check-config",
        "--config",
        "deploy/config/quickstart.yaml",
        env={"CRYSTALLIZE_SIGNATURE_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "/webhooks/crystallize -> topic webhooks.raw" in result.stdout
    assert "consumers: group webhook-consumers, topics webhooks.raw" in result.stdout
    assert "sink events_file: file" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_check_config_refuses_a_broken_consumers_section(tmp_path: Path) -> None:
    """The file is shared: "config OK" means both processes would start on it."""
    source = {"name": "c", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}
    sinks = {"out": {"type": "file", "path": "x.jsonl", "fsnyc": "never"}}
    path = write(tmp_path, {"sources": [source], "consumers": {"sinks": sinks}})
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "config OK" not in result.stdout
    assert "consumers.sinks.out.fsnyc: got 'never': expected no such key" in result.stderr
    assert "Traceback" not in result.stderr
    only = run("check-config", "--config", str(path), "--only", "gateway")
    assert only.returncode == 0, only.stderr
    assert "consumers:" not in only.stdout
    alone = run_module("consumers", "check-config", "--config", str(path), cwd=ROOT)
    assert alone.returncode == 2
    assert "consumers.sinks.out.fsnyc" in alone.stderr


def test_help_lists_commands_and_examples() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("serve", "check-config", "topics", "examples:"):
        assert word in result.stdout
    serve = run("serve", "--help")
    assert "--admin-port" in serve.stdout
    assert "example" in serve.stdout
    bad = run("serve", "--config", "x.yaml", "--port", "70000")
    assert bad.returncode == 2
    assert "not a port number" in bad.stderr


def serve_without_kafka(tmp_path: Path, *extra: str) -> tuple[int, int, subprocess.Popen[str]]:
    """``serve`` pointed at a port where no broker listens: (that port, the admin port, the
    process, started)."""
    dead = free_port()  # nothing listens here
    path = write(
        tmp_path,
        {
            "kafka": {"bootstrap_servers": f"127.0.0.1:{dead}"},
            "gateway": {"log_format": "text"},
            "sources": [
                {"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}
            ],
        },
    )
    admin = free_port()
    while admin == 65535:
        admin = free_port()
    argv = ["--config", str(path), "--host", "127.0.0.1", "--port", str(free_port())]
    environ = {k: v for k, v in os.environ.items() if k != "CRYSTALLIZE_SIGNATURE_SECRET"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", *argv, "--admin-port", str(admin), *extra],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return dead, admin, proc


def wait_not_ready(proc: subprocess.Popen[str], admin: int, within: float = 60.0) -> str:
    """Until ``/readyz`` on ``admin`` answers (503 expected); its body."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r:
                return f"{r.status} {r.read().decode()}"
        except urllib.error.HTTPError as answer:
            return f"{answer.code} {answer.read().decode()}"
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no /readyz on {admin} within {within:g} s")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, stderr


def test_serve_without_kafka_stays_up_not_ready_and_stops_cleanly(tmp_path: Path) -> None:
    """An unreachable broker is an outage to wait out, not a reason to exit (the pod
    would crash-loop while the cluster comes up); readiness says why."""
    dead, admin, proc = serve_without_kafka(tmp_path)
    try:
        readyz = wait_not_ready(proc, admin)
    finally:
        code, stderr = stop(proc)
    assert readyz.startswith("503 "), readyz
    assert "Kafka unreachable" in readyz
    assert code == 0, stderr
    assert f"Kafka at '127.0.0.1:{dead}' is unreachable" in stderr
    assert "Traceback" not in stderr
    assert SECRET not in stderr


def test_serve_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    import socket

    path = write(
        tmp_path,
        {"sources": [{"name": "c", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]},
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            "serve",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-port",
            str(free_port()),
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
