"""``serve --workers N``: options and settings, their validation errors, and the
supervisor's decisions (restart, crash loop, start-up failure, signals) with stand-in
worker processes. The real gateway workers on a real broker are in
``tests/integration/test_gateway_workers.py``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import config as gwconfig
from gateway import supervisor
from gateway.supervisor import Plan, Supervisor, SupervisorError, validate
from tests.gateway.test_main import SECRET, run, serve_without_kafka, stop, wait_not_ready, write
from webhook_common.errors import ConfigError

# --- options and settings ---------------------------------------------------------------


def test_workers_option_is_validated_by_the_parser() -> None:
    for value, expected in (("0", "got 0: expected 1 to 64"), ("two", "got 'two'")):
        result = run("serve", "--config", "x.yaml", "--workers", value)
        assert result.returncode == 2
        assert f"argument --workers: {expected}" in result.stderr
    assert "--workers N" in run("serve", "--help").stdout


def test_workers_setting_defaults_to_one_and_is_bounded() -> None:
    source = {"name": "a", "verifier": {"type": "none", "insecure": True}}
    assert gwconfig.parse_config({"sources": [source]}).gateway.workers == 1
    assert (
        gwconfig.parse_config({"sources": [source], "gateway": {"workers": 4}}).gateway.workers == 4
    )
    with pytest.raises(ConfigError, match=r"gateway\.workers: got 0: expected .*1"):
        gwconfig.parse_config({"sources": [source], "gateway": {"workers": 0}})


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            Plan("c", "127.0.0.1", 8080, 65535, 2),
            "--admin-port: got 65535: expected at most 65534 with --workers 2 "
            "(worker i serves its admin port on admin_port + i",
        ),
        (
            Plan("c", "127.0.0.1", 8083, 8081, 4, "gateway.workers"),
            "--port: got 8083: expected a port outside the workers' admin ports 8081-8084 "
            "(--admin-port 8081 with gateway.workers 4)",
        ),
        (
            Plan("c", "127.0.0.1", 0, 8081, 2),
            "--port: got 0: expected a fixed port with --workers 2",
        ),
        (
            Plan("c", "127.0.0.1", 8080, 0, 2),
            "--admin-port: got 0: expected a fixed port with --workers 2",
        ),
    ],
)
def test_port_plan_errors_name_key_value_and_expectation(plan: Plan, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(plan)
    assert message in str(err.value)


def test_port_plan_that_fits_is_accepted() -> None:
    validate(Plan("c", "127.0.0.1", 8080, 65534, 2))
    validate(Plan("c", "127.0.0.1", 8080, 8081, 8))
    validate(Plan("c", "127.0.0.1", 8089, 8081, 8))


def test_serve_rejects_a_bad_port_plan_before_starting_anything(tmp_path: Path) -> None:
    source = {"name": "c", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}
    path = write(tmp_path, {"gateway": {"workers": 3}, "sources": [source]})
    args = ("serve", "--config", str(path), "--host", "127.0.0.1", "--port", "9001")
    from_config = run(*args, "--admin-port", "9000")
    assert from_config.returncode == 2
    assert (
        "error: --port: got 9001: expected a port outside the workers' admin ports "
        "9000-9002 (--admin-port 9000 with gateway.workers 3)"
    ) in from_config.stderr
    # The command line wins over the config.
    from_cli = run(*args, "--admin-port", "65535", "--workers", "2")
    assert from_cli.returncode == 2
    assert "--admin-port: got 65535: expected at most 65534 with --workers 2" in from_cli.stderr
    assert "Traceback" not in from_config.stderr + from_cli.stderr


def test_serve_workers_without_kafka_stay_up_not_ready_and_stop_cleanly(tmp_path: Path) -> None:
    dead, admin, proc = serve_without_kafka(tmp_path, "--workers", "2")
    try:
        answers = [wait_not_ready(proc, port) for port in (admin, admin + 1)]
    finally:
        code, stderr = stop(proc)
    assert all(a.startswith("503 ") and "Kafka unreachable" in a for a in answers), answers
    assert code == 0, stderr
    assert f"Kafka at '127.0.0.1:{dead}' is unreachable" in stderr
    assert "Traceback" not in stderr
    assert SECRET not in stderr


# --- the supervisor, with stand-in workers ----------------------------------------------

# A stand-in for `python -m gateway serve --worker I/N --link-fd FD`: speaks the link
# protocol and behaves as told by its mode (per start, from a list in a file).
FAKE_WORKER = """
import json, os, signal, socket, sys, time
modes_file, index, fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
link = socket.socket(fileno=fd)
lines = open(modes_file).read().split()
starts = modes_file + f".{index}.starts"
n = len(open(starts).read()) if os.path.exists(starts) else 0
open(starts, "a").write("x")
mode = lines[index].split(",")
mode = mode[min(n, len(mode) - 1)]
def say(**m):
    link.sendall(json.dumps(m).encode() + b"\\n")
if mode == "fail":
    say(error=f"cannot connect to Kafka at 'nowhere' (worker {index})", status=1)
    sys.exit(1)
if mode == "config":
    say(error="sources[0].secrets: expected a secret", status=2)
    sys.exit(2)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
say(ready=True)
if mode == "crash":
    os._exit(3)
link.recv(1)  # until the supervisor is gone, or SIGTERM
sys.exit(0)
"""


Make = Callable[..., Supervisor]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Make:
    monkeypatch.setattr(supervisor, "RESTART_DELAY_SECONDS", 0.05)
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    modes = tmp_path / "modes"

    def make(*per_worker: str) -> Supervisor:
        modes.write_text("\n".join(per_worker))

        def argv(plan: Plan, index: int, fd: int) -> list[str]:
            return [sys.executable, str(script), str(modes), str(index), str(fd)]

        return Supervisor(Plan("c", "127.0.0.1", 1, 2, len(per_worker)), 10.0, argv)

    return make


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_that_cannot_start_stops_all_with_its_error(fake: Make) -> None:
    sup = fake("serve", "fail")
    expected = r"^cannot connect to Kafka at 'nowhere' \(worker 1\)$"
    with pytest.raises(SupervisorError, match=expected):
        sup.run()
    assert all(w.popen is None or w.popen.poll() is not None for w in sup.workers)


def test_a_worker_config_error_is_exit_status_2(fake: Make) -> None:
    with pytest.raises(ConfigError, match=r"sources\[0\]\.secrets: expected a secret"):
        fake("config").run()


def test_a_crash_loop_stops_everything_instead_of_spinning(fake: Make) -> None:
    sup = fake("serve", "crash")
    started = time.monotonic()
    with pytest.raises(SupervisorError) as err:
        sup.run()
    message = str(err.value)
    assert message.startswith("worker 1 failed twice within 5 s of its start")
    assert "exit status 3" in message
    assert sup.workers[1].exits == [3, 3]  # restarted once, then given up
    assert time.monotonic() - started < 10
    assert all(w.popen is None or w.popen.poll() is not None for w in sup.workers)


def test_crashed_worker_is_restarted_and_sigterm_stops_all_cleanly(
    fake: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = fake("serve", "crash,serve")
    pids: list[int] = []

    def stop_when_back() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            w = sup.workers[1]
            if w.exits and w.ready and sup.workers[0].ready:
                pids.extend(x.pid for x in sup.workers)
                os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler is in place
                return
            time.sleep(0.02)

    thread = threading.Thread(target=stop_when_back)
    thread.start()
    try:
        assert sup.run() == 0
    finally:
        thread.join()
    assert sup.workers[1].exits == [3, 0]
    assert sup.workers[0].exits == [0]
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)
    assert "worker 1 (pid" in caplog.text
    assert "exited unexpectedly (exit status 3); restarting it" in caplog.text
    # The supervisor's handlers are gone again.
    assert signal.getsignal(signal.SIGTERM) is not sup._on_signal


def test_each_worker_gets_the_admin_host() -> None:
    from gateway.supervisor import Plan, worker_argv

    argv = worker_argv(Plan("c", "0.0.0.0", 8080, 9000, 2, admin_host="10.0.0.5"), 1, 7)
    assert argv[argv.index("--admin-host") + 1] == "10.0.0.5"
    assert argv[argv.index("--admin-port") + 1] == "9001"
    assert "--admin-host" not in worker_argv(Plan("c", "0.0.0.0", 8080, 9000, 2), 0, 7)
