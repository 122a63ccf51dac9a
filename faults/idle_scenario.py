"""Scenario 10: connections held idle by a blank line, on the shipped HTTP limits.

After a complete request and response on a keep-alive connection, a client sends
``\\r\\n`` (the parser skips it as whitespace between messages) and then nothing. The
bytes end uvicorn's keep-alive wait, and without the gateway's own deadline no timer
would be left on the connection: it would be held for ever, and ``max_connections``
of them would shut the webhook port to everyone (gateway/httplimits.py).

The full profile opens as many such connections as the default ``max_connections``
(4096), the short one a few hundred, among ordinary signed traffic. Each must be closed
by the gateway within ``header_timeout_seconds`` of its blank line (plus slack); none
may be open after ``header_timeout_seconds + keep_alive_seconds`` + slack. Once they are
closed, ordinary traffic must get nothing but 202s and a fresh burst of connections
must be answered. The ordinary traffic is reconciled as in the other scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from faults.procs import Gateway
from faults.reconcile import Result, reconcile
from faults.scenarios import Env, Profile, config, http_sink, settle, stack, target, traffic
from faults.traffic import Tally

# The shipped limits are what the scenario proves: it reads them, never sets them.
from gateway.config import HttpLimits  # noqa: TID251

SHIPPED = HttpLimits()
SHORT_IDLE = 300  # the short profile's idle connections (the full one: max_connections)
SLACK = 5.0  # seconds on top of a deadline: timer tick, a loaded 2-core machine
OPENING = 64  # idle connections being opened (connect, request, answer) at once
BURST_FULL, BURST_SHORT = 500, 50  # fresh connections once the idle ones are closed
FD_MARGIN = 1024  # descriptors besides the idle sockets (Kafka, traffic, logs)
PROBES = 5  # fresh connections while the idle ones are held (informative)
STEP = 30.0  # bound on each network step of an idle or burst connection


@dataclass
class Idle:
    """What happened to the idle connections."""

    attempted: int = 0
    opened: int = 0  # answered, kept alive, then sent the blank line
    refused: int = 0  # closed by the gateway before any answer (max_connections)
    not_kept: int = 0  # answered with ``Connection: close``: never idle
    failed: Counter[str] = field(default_factory=Counter)  # could not connect
    answers: Counter[int] = field(default_factory=Counter)  # status of the request
    closed_after: list[float] = field(default_factory=list)  # seconds blank line -> EOF
    closed_with: Counter[str] = field(default_factory=Counter)  # "408", "reset", ...
    still_open: int = 0  # open at the bound
    idle_now: int = 0
    peak: int = 0  # idle at once
    first_blank: float | None = None
    last_blank: float | None = None
    through: int = 0  # past the opening step, however it ended
    all_through: asyncio.Event = field(default_factory=asyncio.Event)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response: (status, whether the server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        await reader.readuntil(b"0\r\n\r\n")
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


def _request(port: int) -> bytes:
    # Cheap (a 404 for an unknown path, answered before any source runs) and kept alive.
    return f"GET /webhooks/nope HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def _idle_connection(port: int, bound: float, gate: asyncio.Semaphore, out: Idle) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), STEP
                )
            except (OSError, TimeoutError) as exc:
                out.failed[type(exc).__name__] += 1
                return
            try:
                writer.write(_request(port))
                status, kept = await asyncio.wait_for(_read_response(reader), STEP)
                out.answers[status] += 1
                if not kept:
                    out.not_kept += 1
                    writer.close()
                    return
                writer.write(b"\r\n")  # skipped by the parser; then silence
                await writer.drain()
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
                out.refused += 1
                writer.close()
                return
            sent = loop.time()
            out.opened += 1
            out.first_blank = sent if out.first_blank is None else out.first_blank
            out.last_blank = sent
            out.idle_now += 1
            out.peak = max(out.peak, out.idle_now)
    finally:
        out.through += 1
        if out.through == out.attempted:
            out.all_through.set()
    try:
        rest = await asyncio.wait_for(reader.read(), bound)  # until the gateway closes
        out.closed_after.append(loop.time() - sent)
        out.closed_with[rest[:12].decode("latin-1").removeprefix("HTTP/1.1 ") or "EOF"] += 1
    except TimeoutError:
        out.still_open += 1
    except OSError as exc:
        out.closed_after.append(loop.time() - sent)
        out.closed_with[type(exc).__name__] += 1
    finally:
        out.idle_now -= 1
        writer.close()


async def _burst(port: int, count: int) -> Counter[str]:
    """``count`` fresh connections at once, each one request: how each ended."""

    async def one() -> str:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), STEP
            )
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__
        try:
            writer.write(_request(port))
            status, _ = await asyncio.wait_for(_read_response(reader), STEP)
            return str(status)
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
            return type(exc).__name__
        finally:
            writer.close()

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


async def _probe_when_open(port: int, idle: Idle, count: int = PROBES) -> Counter[str]:
    """Once every idle connection was opened (or refused), ``count`` fresh connections
    while they are held: refused when they fill ``max_connections``."""
    await idle.all_through.wait()
    return await _burst(port, count)


async def refused_by_reason(gateway: Gateway) -> dict[str, float]:
    """``webhookgw_ingress_http_refused_total`` by reason, from the admin /metrics."""
    pattern = re.compile(r'^webhookgw_ingress_http_refused_total\{reason="([^"]*)"\} (\S+)$')
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(gateway.admin_url + "/metrics")
    found: dict[str, float] = {}
    for line in r.text.splitlines():
        if m := pattern.match(line):
            found[m[1]] = float(m[2])
    return found


def _open_files_limit(pid: int) -> int | None:
    """The soft ``Max open files`` of process ``pid`` (None: unknown or unlimited)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


@contextlib.contextmanager
def _nofile_at_least(want: int) -> Iterator[int]:
    """The runner's soft RLIMIT_NOFILE raised to ``want`` (within the hard limit) for
    the block, so its idle sockets fit, and the gateway, which inherits it, holds as many;
    yields the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = soft
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    try:
        yield raised
    finally:
        if raised != soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _phase_note(what: str, t: Tally | None) -> str:
    if t is None:
        return f"legit traffic {what}: none sent"
    return (
        f"legit traffic {what}: {t.sent} sent, {t.statuses[202]} answered 202, "
        f"{t.unavailable} 503, {t.other} other {dict(t.errors) or ''}".rstrip()
    )


async def crlf_idle_connections(env: Env, profile: Profile) -> Result:
    count = SHIPPED.max_connections if profile.name == "full" else SHORT_IDLE
    burst = BURST_FULL if profile.name == "full" else BURST_SHORT
    name = f"10 {count} CRLF-idle connections"
    head, keep = SHIPPED.header_timeout_seconds, SHIPPED.keep_alive_seconds
    bound = head + keep + SLACK
    with _nofile_at_least(count + burst + FD_MARGIN) as nofile:
        async with target() as hook:
            cfg = config(env, sinks=http_sink(hook))
            assert "http" not in cfg["gateway"], "scenario 10 runs on the shipped limits"
            async with stack(env, "s10", cfg) as s:
                gw, _ = await s.start()
                assert gw.proc is not None
                gw_nofile = _open_files_limit(gw.proc.pid)
                load = traffic(env, gw, profile, profile.before + profile.after + bound + 120)
                load.start()
                await asyncio.sleep(profile.before)
                load.phase("idle")
                idle = Idle(attempted=count)
                gate = asyncio.Semaphore(OPENING)
                opening = time.monotonic()
                probe = asyncio.create_task(_probe_when_open(gw.port, idle))
                try:
                    await asyncio.gather(
                        *(_idle_connection(gw.port, bound, gate, idle) for _ in range(count))
                    )
                except BaseException:
                    probe.cancel()
                    raise
                meanwhile = await probe
                idle_phase = time.monotonic() - opening
                load.phase("after")  # every idle connection is closed (or counted open)
                fresh = await _burst(gw.port, burst)
                await asyncio.sleep(profile.after)
                tally = await load.stop()
                refused = await refused_by_reason(gw)
                kafka_ids = await settle(s, tally, lambda: hook.delivered, profile)
                result = reconcile(name, tally, kafka_ids, Counter(hook.delivered))

    slowest = max(idle.closed_after, default=0.0)
    fastest = min(idle.closed_after, default=0.0)
    spread = (idle.last_blank or 0.0) - (idle.first_blank or 0.0)
    result.notes += [
        f"shipped limits: header_timeout {head:g} s, keep_alive {keep:g} s, "
        f"max_connections {SHIPPED.max_connections}; open files: runner {nofile}, "
        f"gateway {gw_nofile}",
        f"idle connections: {count} attempted, {idle.opened} answered "
        f"({dict(idle.answers)}) and left idle after a blank line, at most {idle.peak} at "
        f"once (blank lines sent over {spread:.1f} s); {idle.refused} refused at once "
        f"(max_connections), {idle.not_kept} answered Connection: close, "
        f"{sum(idle.failed.values())} could not connect {dict(idle.failed) or ''}".rstrip(),
        f"closed by the gateway: {len(idle.closed_after)} of {idle.opened} "
        f"({dict(idle.closed_with)}), "
        + (f"{fastest:.2f}-{slowest:.2f} s after the blank line; " if idle.closed_after else "")
        + f"still open after {bound:g} s (closed by the runner then): {idle.still_open}; "
        f"idle phase {idle_phase:.0f} s",
        "webhookgw_ingress_http_refused_total: "
        + (", ".join(f"{k} {v:g}" for k, v in sorted(refused.items())) or "none"),
        _phase_note("while idle connections were open", load.during.get("idle")),
        f"{PROBES} fresh connections while they were held: {dict(meanwhile)}",
        _phase_note("after they were closed", load.during.get("after")),
        f"fresh burst of {burst} connections after: {dict(fresh)}",
    ]

    if gw_nofile is not None and gw_nofile < count + FD_MARGIN:
        result.failures.append(
            f"the gateway may open only {gw_nofile} files: it cannot hold {count} connections"
        )
    if idle.opened < count * 0.9:
        result.failures.append(
            f"only {idle.opened} of {count} idle connections were opened: the scenario "
            "proved little"
        )
    if idle.still_open:
        result.failures.append(
            f"{idle.still_open} idle connection(s) still open {bound:g} s after their blank "
            "line (header_timeout + keep_alive + slack): held for ever"
        )
    if slowest > head + SLACK:
        result.failures.append(
            f"the slowest idle connection was closed {slowest:.1f} s after its blank line "
            f"(header_timeout {head:g} s + {SLACK:g} s)"
        )
    after = load.during.get("after")
    if after is None or not after.sent:
        result.failures.append("no legit traffic after the idle connections were closed")
    elif after.statuses[202] != after.sent:
        result.failures.append(
            f"after the idle connections were closed, legit traffic saw {after.unavailable} "
            f"503, {after.other} other {dict(after.errors)}"
        )
    if fresh[str(404)] != burst:
        result.failures.append(f"fresh connections after the idle ones not all answered: {fresh}")
    return result
