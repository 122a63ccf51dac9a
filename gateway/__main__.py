"""Command line of the ingress: ``python -m gateway COMMAND``.

Errors the user can fix (config, ports, Kafka unreachable) end as ``error: ...`` on
stderr with a non-zero exit status, never as a traceback. Exit status 2 means the
configuration or the command line is wrong, 1 that something at run time failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from gateway import config as gwconfig
from gateway import send as send_command
from gateway.sources import build_sources
from gateway.verifiers.registry import VerifierRegistry
from webhook_common.errors import ConfigError, WebhookGatewayError

T = TypeVar("T")

EXAMPLES = """\
examples:
  python -m gateway check-config deploy/config/quickstart.yaml
  python -m gateway topics create --config deploy/config/quickstart.yaml
  python -m gateway serve --config deploy/config/quickstart.yaml --port 8080 --admin-port 8081
  python -m gateway send --config deploy/config/quickstart.yaml --source crystallize --example order
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = gwconfig.load(args.path)
    sources = build_sources(cfg, VerifierRegistry())
    print(f"config OK: {args.path}")
    for sc, source in zip(cfg.sources, sources, strict=True):
        print(
            f"  source {source.name}: {', '.join(source.methods)} {source.path} -> topic "
            f"{source.topic} (verifier {sc.verifier.type}, {len(sc.secrets)} secret(s), "
            f"body limit {source.body_limit} bytes)"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import server
    from webhook_common.logs import setup_logging

    cfg = gwconfig.load(args.config)
    setup_logging(
        cfg.gateway.log_level,
        json_format=cfg.gateway.log_format == "json",
        secrets=[s.get_secret_value() for src in cfg.sources for s in src.secrets],
    )
    sources = build_sources(cfg, VerifierRegistry())
    listen = server.Listen(host=args.host, port=args.port, admin_port=args.admin_port)
    _run(server.serve(cfg, sources, listen))
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from gateway.topics import create_topics

    cfg = gwconfig.load(args.config)
    for outcome in _run(create_topics(cfg)):
        print(outcome.describe())
    return 0


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (``uvicorn[standard]`` brings it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


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
    serve.add_argument("--config", required=True, metavar="PATH", help="YAML config file")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=_port, default=8080, help="webhook port (default 8080)")
    serve.add_argument(
        "--admin-port", type=_port, default=8081, help="metrics/health port (default 8081)"
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser(
        "check-config",
        help="validate a config file without serving",
        description="Validate the ingress sections of a config file (including each "
        "verifier's settings) and print a summary; exit 2 when invalid.",
        epilog="example:\n  python -m gateway check-config deploy/config/quickstart.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", metavar="PATH", help="YAML config file")
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
    create.add_argument("--config", required=True, metavar="PATH", help="YAML config file")
    create.set_defaults(func=cmd_topics_create)

    send_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WebhookGatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
