#!/usr/bin/env python3
"""Readiness probe for a Kafka broker: a real Metadata request, standard library only.

Runs before the project's virtualenv exists (``make kafka-up`` is usable on its own),
so it speaks the wire protocol directly instead of importing a client. It sends
Metadata v4 (the oldest version Kafka 4.x still accepts, KIP-896) for all topics and
succeeds when the answer lists at least one registered broker and an active controller.

Usage: kafka_probe.py HOST:PORT [--timeout SECONDS]
Exit 0 when ready, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

API_METADATA = 3
VERSION = 4


def _request(correlation_id: int) -> bytes:
    client_id = b"kafka-probe"
    header = struct.pack(">hhih", API_METADATA, VERSION, correlation_id, len(client_id)) + client_id
    # topics = null (-1): all topics; allow_auto_topic_creation = false
    body = struct.pack(">ib", -1, 0)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def probe(host: str, port: int, timeout: float) -> tuple[int, int]:
    """Return (number of brokers, controller id) from one Metadata round trip."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_request(7))
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        data = _read_exact(sock, size)
    correlation_id, _throttle, n_brokers = struct.unpack_from(">iii", data, 0)
    if correlation_id != 7:
        raise ValueError(f"unexpected correlation id {correlation_id}")
    offset = 12
    for _ in range(n_brokers):
        offset += 4  # node_id
        (hlen,) = struct.unpack_from(">h", data, offset)
        offset += 2 + hlen + 4  # host, port
        (rlen,) = struct.unpack_from(">h", data, offset)
        offset += 2 + max(rlen, 0)
    (clen,) = struct.unpack_from(">h", data, offset)
    offset += 2 + max(clen, 0)
    (controller,) = struct.unpack_from(">i", data, offset)
    return n_brokers, controller


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=0.0, help="keep trying this long")
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + args.timeout
    last = "no attempt"
    while True:
        try:
            brokers, controller = probe(host, int(port), timeout=2.0)
            if brokers > 0 and controller >= 0:
                return 0
            last = f"metadata lists {brokers} broker(s), controller {controller}"
        except (OSError, ValueError, struct.error) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            print(f"kafka not ready at {args.address}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
