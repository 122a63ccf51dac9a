"""Command line of the ingress: ``python -m gateway COMMAND``.

Errors the user can fix (config, ports, Kafka unreachable) end as ``error: ...`` on
stderr with a non-zero exit status, never as a traceback. Exit status 2 means the
configuration or the command line is wrong, 1 that something at run time failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from gateway import config as gwconfig
from gateway import send as send_command
from gateway.sources import build_sources
from gateway.verifiers.registry import VerifierRegistry
from webhook_common.cli import CONFIG_ENV, add_config_option, exit_status
from webhook_common.config import secret_values
from webhook_common.errors import ConfigError, WebhookGatewayError
from webhook_common.logs import log_settings, setup_logging
from webhook_common.runtime import run

EXAMPLES = """\
examples:
  python -m gateway check-config --config deploy/config/quickstart.yaml
  python -m gateway topics create --config deploy/config/quickstart.yaml
  python -m gateway serve --config deploy/config/quickstart.yaml --port 8080 --admin-port 8081
  python -m gateway serve --config deploy/config/quickstart.yaml --workers 2
  python -m gateway send --example order   # the quick start: its config and only source
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


MAX_WORKERS = 64


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}: expected a whole number") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"got {value}: expected 1 to {MAX_WORKERS}")
    return value


def _worker_slot(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        slot = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}: expected INDEX/COUNT") from None
    if not 0 <= slot[0] < slot[1]:
        raise argparse.ArgumentTypeError(f"got {text!r}: expected 0 <= INDEX < COUNT")
    return slot


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.config or args.path
    if path is None:
        raise ConfigError("--config: missing: expected the YAML config file to check")
    lines: list[str] = []
    if args.only in (None, "gateway"):
        cfg = gwconfig.load_config(path)
        sources = build_sources(cfg, VerifierRegistry())
        for sc, source in zip(cfg.sources, sources, strict=True):
            lines.append(
                f"  source {source.name}: {', '.join(source.methods)} {source.path} -> topic "
                f"{source.topic} (verifier {sc.verifier.type}, {len(sc.secrets)} secret(s), "
                f"body limit {source.body_limit} bytes)"
            )
    if args.only == "consumers" or (args.only is None and _has_section(path, "consumers")):
        # The file is shared: "OK" must mean both sides would start on it.
        from consumers.__main__ import describe_config

        lines += describe_config(path)
    print(f"config OK: {path}", *lines, sep="\n")
    return 0


def _has_section(path: str, name: str) -> bool:
    from webhook_common.config import load_file

    return name in load_file(path, sections=(name,))


def _log_settings(cfg: gwconfig.GatewayConfig) -> tuple[str, str]:
    return log_settings(cfg.gateway.log_level, cfg.gateway.log_format, where="gateway")


def _setup_logging(cfg: gwconfig.GatewayConfig) -> None:
    level, fmt = _log_settings(cfg)
    setup_logging(level, json_format=fmt == "json", secrets=secret_values(cfg))


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import server
    from gateway.topics import check_topic_sizes

    if args.worker is not None:
        return _serve_worker(args)
    cfg = gwconfig.load_config(args.config)
    _setup_logging(cfg)
    sources = build_sources(cfg, VerifierRegistry())
    # Here, once, rather than in each worker: N workers would log N copies of it.
    run(check_topic_sizes(cfg))
    if args.workers is not None:
        count, count_key = args.workers, "--workers"
    else:
        count, count_key = cfg.gateway.workers, "gateway.workers"
    if count > 1:
        from gateway import supervisor

        plan = supervisor.Plan(
            config=args.config,
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            admin_host=args.admin_host,
            count=count,
            count_key=count_key,
        )
        return supervisor.run(plan, cfg.gateway)
    listen = server.Listen(
        host=args.host, port=args.port, admin_port=args.admin_port, admin_host=args.admin_host
    )
    run(server.serve(cfg, sources, listen))
    return 0


def _serve_worker(args: argparse.Namespace) -> int:
    """One worker of ``serve --workers N``, started by ``gateway/supervisor.py``. Its
    start-up errors go to the supervisor, which reports them once for all workers."""
    from gateway import server, supervisor

    if args.link_fd is None:
        raise ConfigError("--worker: expected --link-fd too (set by the supervisor)")
    index, count = args.worker
    link = supervisor.WorkerLink(index, count, args.link_fd)
    try:
        cfg = gwconfig.load_config(args.config)
        _setup_logging(cfg)
        supervisor.tag_worker_logs(index, text_format=_log_settings(cfg)[1] == "text")
        sources = build_sources(cfg, VerifierRegistry())
        listen = server.Listen(
            host=args.host, port=args.port, admin_port=args.admin_port, admin_host=args.admin_host
        )
        run(server.serve(cfg, sources, listen, worker=link))
    except ConfigError as exc:
        if link.fail(str(exc), 2):
            return 2
        raise
    except WebhookGatewayError as exc:
        if link.fail(str(exc), 1):
            return 1
        raise
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from gateway.topics import create_topics, exit_status_for

    cfg = gwconfig.load_config(args.config)
    outcomes = run(create_topics(cfg))
    for outcome in outcomes:
        print(outcome.describe())
    return exit_status_for(outcomes)


def cmd_spool_resend(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.spool.rejected import resend_spool

    cfg = gwconfig.load_config(args.config)
    root = Path(args.path) if args.path else cfg.gateway.spool.path
    report = run(resend_spool(cfg, root, args.timeout))
    print(
        f"resent {report.sent} record(s) from {report.files} file(s) under {root}; "
        f"kept {len(report.failed)}"
    )
    for line in report.failed:
        print(f"kept: {line}", file=sys.stderr)
    if report.unreadable_bytes:
        print(
            f"skipped {report.unreadable_bytes} unreadable byte(s) at the end of a file "
            "(an interrupted append: those records are still in the journal)",
            file=sys.stderr,
        )
    return 1 if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Webhook ingress: verify webhooks on their raw bytes, write them to "
        "Kafka, answer 202 once Kafka has them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the gateway (webhook port and admin port)",
        description="Serve webhooks on --port and /metrics, /healthz, /readyz on "
        "--admin-port until SIGTERM/SIGINT, then drain and flush.",
        epilog="example:\n  python -m gateway serve --config deploy/config/quickstart.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(serve)
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=_port, default=8080, help="webhook port (default 8080)")
    serve.add_argument(
        "--admin-port",
        type=_port,
        default=8081,
        help="metrics/health port (default 8081); with --workers N, worker i uses this + i",
    )
    serve.add_argument(
        "--admin-host",
        default=None,
        metavar="HOST",
        help="address the admin port binds (default: --host); e.g. 127.0.0.1 or a pod-internal "
        "address, so metrics and health are not served where webhooks are",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="gateway processes sharing the webhook port (default: gateway.workers "
        "from the config, else 1); N > 1 adds a supervisor process",
    )
    # Set by the supervisor on the command lines of its workers (gateway/supervisor.py).
    serve.add_argument("--worker", type=_worker_slot, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--link-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser(
        "check-config",
        help="validate a config file without serving",
        description="Validate a config file as both processes read it (each verifier's "
        "and each sink's settings included) and print a summary; exit 2 when invalid.",
        epilog="example:\n  python -m gateway check-config --config deploy/config/quickstart.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get(CONFIG_ENV) or None,
        help=f"YAML config file (default: ${CONFIG_ENV})",
    )
    check.add_argument("path", nargs="?", metavar="PATH", help=argparse.SUPPRESS)
    check.add_argument(
        "--only",
        choices=["gateway", "consumers"],
        default=None,
        help="check one side's sections (default: the gateway's, and the consumers' when "
        "the file has them)",
    )
    check.set_defaults(func=cmd_check_config)

    topics = sub.add_parser(
        "topics",
        help="manage the Kafka topics the config names",
        description="Manage the Kafka topics the config names.",
    )
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = topics_sub.add_parser(
        "create",
        help="create missing topics (existing ones are reported, not changed)",
        description="Create the topics of the top-level `topics:` list plus every source "
        "topic not listed there. Idempotent.",
        epilog="example:\n  python -m gateway topics create --config deploy/config/quickstart.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(create)
    create.set_defaults(func=cmd_topics_create)

    spool = sub.add_parser(
        "spool",
        help="work with the durable spool's files",
        description="Work with the durable spool's files (gateway.spool).",
    )
    spool_sub = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")
    resend = spool_sub.add_parser(
        "resend",
        help="produce again the records the spool set aside (Kafka refused them for good)",
        description="Produce again every record the drainer set aside in a `rejected` file "
        "because Kafka refused it for good (e.g. its topic was deleted after the record was "
        "accepted). Run it once the cause is fixed; a running gateway may keep serving. "
        "Records Kafka refuses again are kept; exit status 1 then.",
        epilog="example:\n  python -m gateway spool resend --config deploy/config/quickstart.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(resend)
    resend.add_argument(
        "--path", metavar="DIR", help="the spool directory (default: gateway.spool.path)"
    )
    resend.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for Kafka's acknowledgement of each record (default 30)",
    )
    resend.set_defaults(func=cmd_spool_resend)

    send_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return exit_status(lambda: func(args))


if __name__ == "__main__":
    sys.exit(main())
