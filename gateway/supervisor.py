"""``python -m gateway serve --workers N`` with N > 1: a supervisor and N worker processes.

One gateway process is one event loop, so it uses one core. With ``--workers N`` a
supervisor starts N workers, each a complete gateway (its own uvicorn servers, aiokafka
producer and event loop). They share the webhook port through ``SO_REUSEPORT``: every
worker has its own listening socket and the kernel spreads new connections evenly over
them. (With one inherited listening socket, whichever process happens to be waiting in
``accept`` takes the connection, so under keep-alive traffic one worker ends up holding
most connections.) The supervisor itself never listens on the port: the kernel would
hand connections to a socket nobody accepts on. It only checks up front that every port
is free, so a busy port is one clear error. Worker ``i`` serves ``/metrics``,
``/healthz`` and ``/readyz`` on ``admin_port + i``.

Workers are started with :mod:`subprocess` as ``python -m gateway serve ... --worker
I/N --link-fd FD``, not forked and not through :mod:`multiprocessing`: each worker runs
the same code path as a lone ``serve`` from a fresh interpreter (no state, threads or
event loop inherited through ``fork``), nothing has to be pickled, a restart is just
starting the command again, and the workers write their logs to the inherited stderr
directly, so no log line goes through the supervisor.

Each worker gets one end of a socket pair (the *link*). The worker writes one JSON line
on it: ``{"ready": true}`` once it serves, or ``{"error": ..., "status": ...}`` when it
cannot start, so the supervisor can fail with the worker's own message. The supervisor
never writes; when it dies, the worker reads end-of-file and shuts down gracefully as on
SIGTERM, so no worker outlives its supervisor.

Signals: SIGTERM / SIGINT to the supervisor is forwarded to every worker, each shuts
down gracefully (``/readyz`` 503, drain, flush) and the supervisor exits 0 when all
exited 0. A worker that exits on its own (crash, SIGKILL, OOM) is restarted; one that
fails twice in a row within :data:`QUICK_EXIT_SECONDS` of its start stops everything
(exit status 1, its error), as does a worker that cannot start at all the first time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from gateway.config import GatewaySection
from webhook_common.errors import ConfigError, WebhookGatewayError

log = logging.getLogger(__name__)

# A worker that exits this soon after it was started counts as a failed start.
QUICK_EXIT_SECONDS = 5.0
# Pause before restarting a worker that failed quickly (a crash loop must not spin).
RESTART_DELAY_SECONDS = 1.0
# Time a worker gets after SIGTERM on top of the configured shutdown phases.
STOP_MARGIN_SECONDS = 15.0
# How often the supervisor looks at its children when nothing else wakes it.
POLL_SECONDS = 0.5


class SupervisorError(WebhookGatewayError):
    """The workers could not be started or kept running; the message says why."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``serve --workers N`` was asked for. ``count_key`` names where N came from
    (``--workers`` or ``gateway.workers``), for error messages."""

    config: str
    host: str
    port: int
    admin_port: int
    count: int
    count_key: str = "--workers"
    admin_host: str | None = None

    def admin_ports(self) -> list[int]:
        return [self.admin_port + i for i in range(self.count)]


def validate(plan: Plan) -> None:
    """Port checks that only exist with several workers; :class:`ConfigError` naming
    the key, the value and what was expected."""
    n = plan.count
    problems = []
    if plan.port == 0:
        problems.append(
            f"--port: got 0: expected a fixed port with {plan.count_key} {n} "
            "(the workers must all listen on the same one)"
        )
    if plan.admin_port == 0:
        problems.append(
            f"--admin-port: got 0: expected a fixed port with {plan.count_key} {n} "
            "(worker i serves its admin port on admin_port + i)"
        )
    elif plan.admin_port + n - 1 > 65535:
        problems.append(
            f"--admin-port: got {plan.admin_port}: expected at most {65535 - n + 1} with "
            f"{plan.count_key} {n} (worker i serves its admin port on admin_port + i, "
            "the last one must be <= 65535)"
        )
    elif plan.port in plan.admin_ports():
        last = plan.admin_port + n - 1
        problems.append(
            f"--port: got {plan.port}: expected a port outside the workers' admin ports "
            f"{plan.admin_port}-{last} (--admin-port {plan.admin_port} with "
            f"{plan.count_key} {n})"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def check_free(host: str, port: int) -> None:
    """Fail like a lone gateway does when ``host:port`` is taken, without listening.

    The probe is bound without ``SO_REUSEPORT``, so it conflicts with any listener,
    including another gateway's workers; it is closed before the workers bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SupervisorError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None


def stop_seconds(settings: GatewaySection) -> float:
    """How long a worker may take after SIGTERM before the supervisor kills it: the
    configured delay and grace, the spool's final drain, the producer's flush."""
    from gateway.spool import STOP_DRAIN_SECONDS

    return (
        settings.shutdown_delay_seconds
        + settings.shutdown_grace_seconds
        + STOP_DRAIN_SECONDS
        + settings.producer.ack_timeout_seconds
        + STOP_MARGIN_SECONDS
    )


def worker_argv(plan: Plan, index: int, link_fd: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        plan.config,
        "--host",
        plan.host,
        "--port",
        str(plan.port),
        "--admin-port",
        str(plan.admin_port + index),
        *(["--admin-host", plan.admin_host] if plan.admin_host is not None else []),
        "--worker",
        f"{index}/{plan.count}",
        "--link-fd",
        str(link_fd),
    ]


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


# --- the worker's side ------------------------------------------------------------------


class WorkerLink:
    """A worker's end of the link (see the module docstring); implements
    :class:`gateway.server.Supervised`."""

    def __init__(self, index: int, count: int, fd: int) -> None:
        self._index = index
        self._count = count
        self._sock = socket.socket(fileno=fd)

    @property
    def index(self) -> int:
        return self._index

    @property
    def count(self) -> int:
        return self._count

    def _send(self, message: dict[str, Any]) -> bool:
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            return False
        return True

    def ready(self) -> None:
        self._send({"ready": True})

    def fail(self, message: str, status: int) -> bool:
        """Hand a start-up error to the supervisor; False when it is gone."""
        return self._send({"error": message, "status": status})

    def watch(self, on_gone: Callable[[], None]) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        fd = self._sock.fileno()
        self._sock.setblocking(False)

        def readable() -> None:
            try:
                data = self._sock.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the supervisor never writes: this is its exit
                loop.remove_reader(fd)
                log.warning("supervisor is gone: shutting down")
                on_gone()

        loop.add_reader(fd, readable)


def tag_worker_logs(index: int, text_format: bool) -> None:
    """Every log line of worker ``index`` carries the index (``"worker": i`` in JSON,
    ``worker-i`` in text). Call after :func:`webhook_common.logs.setup_logging`."""

    class _Tag(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.worker = index
            return True

    for handler in logging.getLogger().handlers:
        if getattr(handler, "_webhookgw", False):
            handler.addFilter(_Tag())
            if text_format:
                handler.setFormatter(
                    logging.Formatter(
                        f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s"
                    )
                )


# --- the supervisor ---------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    link: socket.socket | None = None
    buffer: bytes = b""
    started: float = 0.0
    ready: bool = False
    ever_ready: bool = False
    error: str | None = None
    error_status: int = 1
    quick_failures: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else 0


class _Fatal(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Supervisor:
    """Runs the workers of one :class:`Plan` until a signal (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        stop_within: float,
        argv: Callable[[Plan, int, int], list[str]] = worker_argv,
    ) -> None:
        self.plan = plan
        self.stop_within = stop_within
        self._argv = argv
        self.workers = [_Worker(i) for i in range(plan.count)]
        self._selector = selectors.DefaultSelector()
        self._signals: list[int] = []
        self._stopping = False
        self._clean = True

    # starting and reading workers

    def _spawn(self, w: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            w.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                self._argv(self.plan, w.index, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            raise _Fatal(f"cannot start worker {w.index}: {exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        w.link, w.buffer, w.ready, w.error = ours, b"", False, None
        w.started, w.restart_at = time.monotonic(), None
        self._selector.register(ours, selectors.EVENT_READ, w)
        log.info(
            "worker %d started (pid %d, admin port %d)",
            w.index,
            w.pid,
            self.plan.admin_port + w.index,
            extra={"worker": w.index, "pid": w.pid},
        )

    def _read_link(self, w: _Worker) -> None:
        """Take what the worker wrote; close the link at end-of-file."""
        if w.link is None:
            return
        while True:
            try:
                data = w.link.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._selector.unregister(w.link)
                w.link.close()
                w.link = None
                break
            w.buffer += data
        *lines, w.buffer = w.buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("ready"):
                w.ready = w.ever_ready = True
                log.info(
                    "worker %d ready (pid %d)",
                    w.index,
                    w.pid,
                    extra={"worker": w.index, "pid": w.pid},
                )
            elif "error" in message:
                w.error = str(message["error"])
                w.error_status = int(message.get("status", 1))

    def _exited(self, w: _Worker, now: float) -> None:
        assert w.popen is not None
        pid, code = w.popen.pid, w.popen.returncode
        self._read_link(w)  # a start-up error is written just before the exit
        if w.link is not None:
            self._selector.unregister(w.link)
            w.link.close()
            w.link = None
        was_ready, w.popen, w.ready = w.ready, None, False
        w.exits.append(code)
        what = describe_exit(code)
        extra = {"worker": w.index, "pid": pid, "exit_status": code}
        if self._stopping:
            # A worker stopped by the forwarded signal before it installed its own
            # handlers had accepted nothing: that is a clean stop too.
            early = not was_ready and code in (-signal.SIGTERM, -signal.SIGINT, 130)
            if code != 0 and not early:
                self._clean = False
                log.error("worker %d (pid %d) stopped with %s", w.index, pid, what, extra=extra)
            else:
                log.info("worker %d (pid %d) stopped", w.index, pid, extra=extra)
            return
        if not w.ever_ready:
            raise _Fatal(
                w.error or f"worker {w.index} (pid {pid}) {what} before it was ready",
                w.error_status if w.error else 1,
            )
        quick = now - w.started < QUICK_EXIT_SECONDS
        w.quick_failures = w.quick_failures + 1 if quick else 0
        reason = f"{what}: {w.error}" if w.error else what
        if w.quick_failures >= 2:
            raise _Fatal(
                f"worker {w.index} failed twice within {QUICK_EXIT_SECONDS:g} s of its "
                f"start (last: pid {pid}, {reason}); stopping all workers",
                w.error_status if w.error else 1,
            )
        delay = RESTART_DELAY_SECONDS if quick else 0.0
        log.error(
            "worker %d (pid %d) exited unexpectedly (%s); restarting it in %g s",
            w.index,
            pid,
            reason,
            delay,
            extra=extra,
        )
        w.restart_at = now + delay

    # signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _forward(self, signum: int) -> None:
        for w in self.workers:
            w.restart_at = None
            if w.popen is not None and w.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.popen.send_signal(signum)

    def _kill_all(self) -> None:
        for w in self.workers:
            if w.popen is not None and w.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.popen.kill()
                w.popen.wait()

    def _stop_all(self) -> None:
        """After a fatal error: SIGTERM the others, wait (bounded), then SIGKILL."""
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_within
        for w in self.workers:
            if w.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.popen.wait(max(0.0, deadline - time.monotonic()))
        self._kill_all()

    # the loop

    def run(self) -> int:
        """0 when every worker stopped cleanly after a signal; raises
        :class:`SupervisorError` (or :class:`ConfigError` for a worker's config error)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._selector.register(wake_r, selectors.EVENT_READ, None)
        previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            return self._loop()
        except _Fatal as fatal:
            self._stop_all()
            if fatal.status == 2:
                raise ConfigError(fatal.message) from None
            raise SupervisorError(fatal.message) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            self._kill_all()  # nothing is left behind, whatever happened
            for w in self.workers:
                if w.link is not None:
                    w.link.close()
            self._selector.close()
            wake_r.close()
            wake_w.close()

    def _loop(self) -> int:
        for w in self.workers:
            self._spawn(w)
        deadline = 0.0
        while True:
            exiting = any(w.link is None and w.popen is not None for w in self.workers)
            for key, _ in self._selector.select(0.02 if exiting else POLL_SECONDS):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        while key.fileobj.recv(64):  # type: ignore[union-attr]
                            pass
                else:
                    self._read_link(key.data)
            now = time.monotonic()
            if self._signals and not self._stopping:
                signum = self._signals[0]
                log.info(
                    "%s received, stopping %d workers",
                    signal.Signals(signum).name,
                    len(self.workers),
                )
                self._stopping = True
                deadline = now + self.stop_within
                self._forward(signum)
            for w in self.workers:
                if w.popen is not None and w.popen.poll() is not None:
                    self._exited(w, now)
                if not self._stopping and w.restart_at is not None and now >= w.restart_at:
                    self._spawn(w)
            if self._stopping:
                if all(w.popen is None for w in self.workers):
                    log.info("all workers stopped")
                    return 0 if self._clean else 1
                if now > deadline:
                    alive = [w.index for w in self.workers if w.popen is not None]
                    log.error(
                        "workers %s still running %g s after the signal; killing them",
                        alive,
                        self.stop_within,
                    )
                    self._kill_all()
                    return 1


_SIGNALS: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)


def run(plan: Plan, settings: GatewaySection) -> int:
    """``serve --workers N``: validate, check the ports, supervise until a signal."""
    validate(plan)
    check_free(plan.host, plan.port)
    for port in plan.admin_ports():
        check_free(plan.host, port)
    log.info(
        "supervisor (pid %d): starting %d workers on %s:%d, admin ports %d-%d",
        os.getpid(),
        plan.count,
        plan.host,
        plan.port,
        plan.admin_port,
        plan.admin_port + plan.count - 1,
    )
    return Supervisor(plan, stop_seconds(settings)).run()
