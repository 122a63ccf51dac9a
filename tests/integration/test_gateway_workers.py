"""``python -m gateway serve --workers 2`` on the real broker: both workers serve the one
port, a killed worker comes back, SIGTERM stops everything cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.verifiers.crystallize import sign_hmac
from tests.gateway.support import free_port, read_topic, serve_argv
from tests.integration.conftest import TopicFactory

SECRET = "workers-secret-5be1c0"
REQUESTS = 200
PATH = "/webhooks/crystallize"
pytestmark = pytest.mark.timeout(150)


def port_plan(workers: int) -> tuple[int, int]:
    """A free webhook port and a free run of ``workers`` consecutive admin ports."""
    for _ in range(50):
        admin = free_port()
        if admin + workers - 1 > 65535:
            continue
        try:
            for p in range(admin, admin + workers):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        port = free_port()
        if port not in range(admin, admin + workers):
            return port, admin
    raise AssertionError("no free run of ports")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def children(pid: int) -> dict[int, str]:
    """pid -> command line of the direct children of ``pid``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode()
    return found


def wait_gone(pid: int, within: float) -> bool:
    """True once ``pid`` no longer exists (reaped), waiting up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def worker_pid(supervisor: int, index: int, count: int) -> int:
    matches = [p for p, cmd in children(supervisor).items() if f"--worker {index}/{count}" in cmd]
    assert len(matches) == 1, children(supervisor)
    return matches[0]


class Workers:
    def __init__(self, config: Path, count: int) -> None:
        self.count = count
        self.port, self.admin_port = port_plan(count)
        self.log_path = config.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            serve_argv(config, self.port, self.admin_port, "--workers", str(count)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the teardown can reach every worker
        )

    def admin(self, i: int) -> str:
        return f"http://127.0.0.1:{self.admin_port + i}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, i: int, within: float = 30.0) -> None:
        async with httpx.AsyncClient() as c, asyncio.timeout(within):
            while True:
                assert self.proc.poll() is None, self.log()
                try:
                    if (await c.get(self.admin(i) + "/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    async def accepted_counts(self) -> list[float]:
        counts = []
        async with httpx.AsyncClient() as c:
            for i in range(self.count):
                text = (await c.get(self.admin(i) + "/metrics")).text
                counts.append(
                    sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("webhookgw_ingress_requests_total{")
                    )
                )
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


async def post_fresh(url: str, n: int, start: int) -> tuple[list[str], dict[int, int]]:
    """``n`` signed orders, each on a new connection (so the kernel picks a worker for
    each); the ids answered 202 and the count of each status."""
    ids: list[str] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=20, limits=limits) as c:

        async def one(i: int) -> None:
            body = b'{"order":{"get":{"id":"o-%d","n":%d}}}' % (i % 17, i)
            r = await c.post(
                url, content=body, headers={"x-crystallize-signature": sign_hmac(SECRET, body)}
            )
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 202:
                ids.append(r.json()["id"])

        sem = asyncio.Semaphore(20)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(start, start + n)))
    return ids, statuses


def write_config(tmp_path: Path, bootstrap: str, topic: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": bootstrap},
                "gateway": {"log_format": "text", "shutdown_grace_seconds": 10},
                "sources": [
                    {
                        "name": "crystallize",
                        "verifier": {"type": "crystallize", "mode": "hmac"},
                        "secrets": [SECRET],
                        "topic": topic,
                    }
                ],
            }
        )
    )
    return path


async def test_two_workers_share_the_port_survive_a_kill_and_stop_cleanly(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topic("gw-workers", partitions=3)
    gw = Workers(write_config(tmp_path, kafka_bootstrap, topic), 2)
    try:
        await gw.wait_ready(0)
        await gw.wait_ready(1)
        url = f"http://127.0.0.1:{gw.port}{PATH}"

        ids, statuses = await post_fresh(url, REQUESTS, 0)
        assert statuses == {202: REQUESTS}, gw.log()
        counts = await gw.accepted_counts()
        assert sum(counts) == REQUESTS
        assert all(c > 0 for c in counts), counts  # the kernel spread the connections

        victim = worker_pid(gw.proc.pid, 1, 2)
        os.kill(victim, signal.SIGKILL)
        # Connections already queued on the victim's socket are reset with it (their
        # senders retry; none had an answer). Once it is gone, the other worker takes
        # every new connection until the restarted one joins.
        assert await asyncio.to_thread(wait_gone, victim, 10.0)
        during, statuses = await post_fresh(url, 50, REQUESTS)
        assert statuses == {202: 50}, gw.log()
        await gw.wait_ready(1)
        assert worker_pid(gw.proc.pid, 1, 2) != victim
        after, statuses = await post_fresh(url, 50, REQUESTS + 50)
        assert statuses == {202: 50}, gw.log()
        assert f"worker 1 (pid {victim}) exited unexpectedly (killed by SIGKILL)" in gw.log()

        accepted = set(ids + during + after)
        assert len(accepted) == REQUESTS + 100
        records = await read_topic(kafka_bootstrap, topic, expected=len(accepted))
        in_kafka = {dict(r.headers)["ce_id"].decode() for r in records}
        assert accepted <= in_kafka

        pids = [gw.proc.pid, *children(gw.proc.pid)]
        gw.proc.send_signal(signal.SIGTERM)  # the supervisor only
        assert await asyncio.to_thread(gw.proc.wait, 60) == 0, gw.log()
        left = [pid for pid in pids[1:] if not wait_gone(pid, 0)]
        assert left == [], "workers left behind"
        for port in (gw.port, gw.admin_port, gw.admin_port + 1):
            assert port_is_free(port), port
        assert gw.log().count("gateway stopped") == 2
    finally:
        gw.stop()


def test_busy_webhook_port_is_one_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, kafka_bootstrap, "webhooks.unused")
    port, admin = port_plan(2)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that shares
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = subprocess.run(
            serve_argv(config, port, admin, "--workers", "2"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "worker 0 started" not in result.stderr  # refused before starting any
    assert "Traceback" not in result.stderr
