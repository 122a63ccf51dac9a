"""Private Redis deployments made of Debian's ``redis-server`` on loopback, as teams run
them when one Redis is not enough: a Redis Cluster of three masters with a replica
each, a master and replica watched by Sentinel, and a TLS server with mutual TLS and
ACL users. Each lives in its own directory on its own ports; stopping one never
touches the shared services."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from faults.procs import free_port
from tests.integration.secure_kafka import _openssl

USER = "webhookgw"
PASSWORD = "dedup-" + secrets.token_hex(8)
ADMIN_PASSWORD = "admin-" + secrets.token_hex(8)
SENTINEL_PASSWORD = "sentinel-" + secrets.token_hex(8)
# What the dedup store needs and no more: its keys only, its commands only (the cluster
# client also asks for the topology).
ACL = f"{USER} on >{PASSWORD} ~webhookgw:* -@all +mget +set +ping +cluster|slots +command"


def redis_server() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("redis-server is not installed (deploy/local/redis.sh up installs it)")
    return found


@dataclass
class Node:
    port: int
    directory: Path
    args: Sequence[str]
    tls: Sequence[str] = ()  # redis-cli options to reach it
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:  # the child keeps its own
            self.proc = subprocess.Popen(
                [redis_server(), *self.args, "--dir", str(self.directory), "--logfile", ""],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        deadline = time.monotonic() + 20
        while self.cli("PING", check=False).strip() != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis on {self.port} did not start; see {self.directory}")
            time.sleep(0.05)
        return self

    def cli(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(
            [
                "redis-cli",
                "-p",
                str(self.port),
                "--user",
                "admin",
                "--pass",
                ADMIN_PASSWORD,
                "--no-auth-warning",
                *self.tls,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"redis-cli -p {self.port} {' '.join(args)}: {res.stderr}")
        return res.stdout

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _base(port: int) -> list[str]:
    return [
        "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        # Each ACL rule is its own argument: redis-server joins them into one line.
        "--user", "default", "off",
        "--user", *f"admin on >{ADMIN_PASSWORD} ~* &* +@all".split(),
        "--user", *ACL.split(),
    ]  # fmt: skip


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis://{USER}:{PASSWORD}@{seeds}"

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def _nodes_table(self) -> list[list[str]]:
        return [line.split() for line in self.alive()[0].cli("CLUSTER", "NODES").splitlines()]

    def _by_address(self, address: str) -> Node:
        return self.node(int(address.split("@")[0].rsplit(":", 1)[1]))

    def master_of(self, key: str) -> Node:
        slot = int(self.alive()[0].cli("CLUSTER", "KEYSLOT", key))
        for parts in self._nodes_table():
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return self._by_address(parts[1])
        raise RuntimeError(f"no master serves the slot of {key!r}")

    def replica_of(self, master: Node) -> Node:
        master_id = master.cli("CLUSTER", "MYID").strip()
        for parts in self._nodes_table():
            if parts[3] == master_id and "slave" in parts[2] and "fail" not in parts[2]:
                return self._by_address(parts[1])
        raise RuntimeError(f"the master on {master.port} has no replica")

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            states = [n.cli("CLUSTER", "INFO", check=False) for n in self.alive()]
            if all("cluster_state:ok" in s for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {within:g} s")
            time.sleep(0.2)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def start_cluster(directory: Path, masters: int = 3) -> Cluster:
    """``masters`` masters and a replica each; a node is declared failed after one
    second, so a failover takes a few seconds, not the default's fifteen."""
    cluster = Cluster()
    try:
        for i in range(masters * 2):
            port = free_port()
            bus = str(free_port())  # the default, port + 10000, may not exist
            args = [*_base(port), "--cluster-enabled", "yes", "--cluster-config-file",
                    "nodes.conf", "--cluster-node-timeout", "1000", "--cluster-port", bus,
                    "--masteruser", "admin", "--masterauth", ADMIN_PASSWORD]  # fmt: skip
            cluster.nodes.append(Node(port, directory / f"node-{i}", args).start())
        create = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        cluster.nodes[0].cli("--cluster", "create", *create, "--cluster-replicas", "1",
                             "--cluster-yes")  # fmt: skip
        cluster.wait_ok()
        # Every replica attached and in sync before a test relies on it.
        deadline = time.monotonic() + 30
        while any(
            "role:slave" in info and "master_link_status:up" not in info
            for info in (n.cli("INFO", "replication") for n in cluster.nodes)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("replicas did not sync")
            time.sleep(0.2)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelSet:
    master: Node
    replica: Node
    sentinels: list[Node]
    name: str = "dedup"

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis://{USER}:{PASSWORD}@{hosts}/0"

    def stop(self) -> None:
        for n in [*self.sentinels, self.replica, self.master]:
            n.stop()


def start_sentinel(directory: Path) -> SentinelSet:
    """A master, its replica and one sentinel watching them (quorum 1)."""
    nodes: list[Node] = []
    try:
        mport, rport, sport = free_port(), free_port(), free_port()
        auth = ["--masteruser", "admin", "--masterauth", ADMIN_PASSWORD]
        master = Node(mport, directory / "master", [*_base(mport), *auth]).start()
        nodes.append(master)
        follow = ["--replicaof", "127.0.0.1", str(mport)]
        replica = Node(rport, directory / "replica", [*_base(rport), *auth, *follow]).start()
        nodes.append(replica)
        conf = directory / "sentinel" / "sentinel.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"port {sport}\nbind 127.0.0.1\n"
            # Sentinels usually have a password of their own (requirepass).
            f"user default on >{SENTINEL_PASSWORD} ~* &* +@all\n"
            f"user admin on >{ADMIN_PASSWORD} ~* &* +@all\n"
            f"sentinel monitor dedup 127.0.0.1 {mport} 1\n"
            "sentinel down-after-milliseconds dedup 1000\n"
            "sentinel failover-timeout dedup 5000\n"
            f"sentinel auth-user dedup admin\nsentinel auth-pass dedup {ADMIN_PASSWORD}\n"
        )
        sentinel = Node(sport, conf.parent, [str(conf), "--sentinel"]).start()
        nodes.append(sentinel)
        return SentinelSet(master, replica, [sentinel])
    except BaseException:
        for n in nodes:
            n.stop()
        raise


@dataclass
class TlsRedis:
    node: Node
    ca: Path
    client_cert: Path
    client_key: Path

    def url(self, user: str = USER, password: str = PASSWORD) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.node.port}/0"


def start_tls(directory: Path) -> TlsRedis:
    """TLS only (no plaintext port), client certificates required, ACL users."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=webhookgw redis test CA")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
                 "ca.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", "san.cnf")  # fmt: skip
    port = free_port()
    args = [*_base(0), "--tls-port", str(port), "--tls-cert-file", str(directory / "server.pem"),
            "--tls-key-file", str(directory / "server.key"), "--tls-ca-cert-file",
            str(directory / "ca.pem"), "--tls-auth-clients", "yes"]  # fmt: skip
    tls = ["--tls", "--cacert", str(directory / "ca.pem"), "--cert",
           str(directory / "client.pem"), "--key", str(directory / "client.key")]  # fmt: skip
    node = Node(port, directory / "data", args, tls).start()
    return TlsRedis(node, directory / "ca.pem", directory / "client.pem", directory / "client.key")
