"""An open-loop load generator: requests at a fixed rate, whatever the server does.

wrk is closed-loop (each connection waits for its answer before sending again), so it
cannot hold a rate; the end-to-end benchmark needs exactly that. Request ``i`` is due
at ``start + i / rate``; its latency counts from that due time, so time spent waiting
for a free connection is not hidden (no coordinated omission). Raw HTTP/1.1 on
keep-alive connections keeps the generator cheap enough for a 2-core machine.

``python -m bench.loadgen --url URL --requests FILE --rate 1000 --duration 10 --out OUT``
writes one JSON object per request: ``due``, ``ack`` (Unix time), ``status``, ``id``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvloop  # uvicorn[standard] brings it; keeps the generator's own overhead low


@dataclass(slots=True)
class Outcome:
    due: float
    ack: float
    status: int
    id: str


def load_requests(path: Path, host: str, target: str) -> list[bytes]:
    """Raw HTTP requests from a (signature line, body line) file, see bench.payload."""
    lines = path.read_bytes().split(b"\n")
    out = []
    for sig, body in zip(lines[0::2], lines[1::2], strict=False):
        if not sig:
            continue
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-Crystallize-Signature: {sig.decode()}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def generate(url: str, requests: list[bytes], rate: float, connections: int) -> list[Outcome]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    outcomes: list[Outcome] = []

    async def one(request: bytes, due_wall: float) -> None:
        reader, writer = await pool.get()
        try:
            status, body = await _exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            outcomes.append(Outcome(due_wall, time.time(), 0, ""))
            writer.close()
            pool.put_nowait(await asyncio.open_connection(host, port))
            return
        event_id = ""
        if status == 202:
            event_id = str(orjson.loads(body).get("id", ""))
        outcomes.append(Outcome(due_wall, time.time(), status, event_id))
        pool.put_nowait((reader, writer))

    tasks = []
    start_mono = time.perf_counter()
    start_wall = time.time()
    for i, request in enumerate(requests):
        offset = i / rate
        delay = start_mono + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, start_wall + offset)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return outcomes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    requests = load_requests(args.requests, parts.netloc, parts.path or "/")
    count = int(args.rate * args.duration)
    if len(requests) < count:
        parser.error(f"--requests holds {len(requests)} requests, the run needs {count}")
    outcomes = uvloop.run(generate(args.url, requests[:count], args.rate, args.connections))
    args.out.write_bytes(
        b"".join(
            orjson.dumps({"due": o.due, "ack": o.ack, "status": o.status, "id": o.id}) + b"\n"
            for o in outcomes
        )
    )


if __name__ == "__main__":
    main()
