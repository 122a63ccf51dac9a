"""``python -m gateway send``: a webhook simulator that signs like the provider does.

It reads the same config file as the gateway, picks one source, and signs each request
with that source's verifier scheme and its configured secret, so what it sends passes
(or, with a wrong secret, fails) exactly as a real delivery would:

* ``crystallize`` — an HS256 JWT over ``{url, method, body}`` (``--mode jwt``) or the
  hex HMAC of the body (``--mode hmac``); the verifier's tenant, issuer and audience;
* ``standard-webhooks``, ``stripe``, ``github``, ``shopify``, ``generic-hmac`` — their
  headers, with a fresh delivery id per request where the scheme carries one;
* ``none`` — no signature.

Every request is signed when it is sent (timestamps and JWT expiry are current), and
the URL that is signed is the one the gateway reconstructs: ``public_url`` when the
source has one, else the request URL. Output: one line per request (status, event id,
latency) and, for ``--repeat``, a summary. Exit status 0 when every answer was 2xx,
1 otherwise, 2 for a wrong command line or config.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from gateway import config as gwconfig
from gateway import examples
from gateway.sources import build_sources
from gateway.verifiers import Outgoing, Signing
from gateway.verifiers.registry import VerifierRegistry
from webhook_common.cli import add_config_option
from webhook_common.errors import ConfigError

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# `send` without --config in the repository's root, as the quick start runs it.
QUICKSTART = "deploy/config/quickstart.yaml"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

EPILOG = """\
examples:
  # the example order, signed as Crystallize does (JWT), to the local gateway
  python -m gateway send --example order   # the quick start: its config and only source
  # a body from a file, signed with the older body-HMAC scheme
  python -m gateway send --config deploy/config/quickstart.yaml --source crystallize \\
      --file order.json --mode hmac
  # from stdin, to another port, 200 times with 20 requests in flight, summary only
  cat order.json | python -m gateway send --config prod.yaml --source crystallize --file - \\
      --url http://127.0.0.1:9000 --repeat 200 --concurrency 20 --quiet
  # a GitHub delivery with its event name
  python -m gateway send --config github.yaml --source gh --file push.json --event-type push

Secrets come from the config file (and so from the environment it interpolates), the
same ones the gateway verifies with. Examples: """ + ", ".join(examples.names())


# -- signing --------------------------------------------------------------------------

Signer = Callable[[str, str, bytes], dict[str, str]]  # (method, signed url, body) -> headers


@dataclass(frozen=True, slots=True)
class Target:
    """What one run sends: where, how signed, and what."""

    url: httpx.URL
    signed_url: str
    method: str
    body: bytes
    headers: Mapping[str, str]
    signer: Signer


# -- building a target from the command line -------------------------------------------


def _read_body(args: argparse.Namespace, stdin: TextIO) -> bytes:
    if args.example is not None:
        return examples.body(args.example)
    if args.file is None:
        return b""
    if args.file == "-":
        return stdin.buffer.read()
    try:
        with open(args.file, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"--file {args.file!r}: {exc.strerror or exc}") from None


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError(f"--header {text!r}: expected 'Name: value'")
    return name.strip().lower(), value.strip()


def _request_url(base: str | None, route_path: str, segment: str | None) -> httpx.URL:
    text = base or DEFAULT_BASE_URL
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"--url {text!r}: not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"--url {text!r}: expected an http(s) URL such as {DEFAULT_BASE_URL}")
    path = url.path
    if path in ("", "/"):
        path = route_path  # a bare origin: the source's own path
    if segment is not None:
        path = path.rstrip("/") + "/" + segment
    return url.copy_with(path=path)


def _signed_url(url: httpx.URL, public_url: str | None, route_path: str) -> str:
    """The URL as the gateway reconstructs it for the verifier."""
    if public_url is None:
        return str(url)
    path = url.path
    rest = path[len(route_path) :] if path.startswith(route_path) else ""
    query = url.query.decode("ascii")
    return public_url + rest + (f"?{query}" if query else "")


def _signer(verifier: Signing, secret: str, scheme: str | None, event_type: str | None) -> Signer:
    def headers(method: str, url: str, body: bytes) -> dict[str, str]:
        return verifier.sign(Outgoing(method, url, body, secret, event_type, scheme))

    return headers


def build_target(
    args: argparse.Namespace,
    stdin: TextIO = sys.stdin,
    registry: VerifierRegistry | None = None,
) -> Target:
    """Validate the command line against the config and prepare what to send."""
    cfg = gwconfig.load_config(args.config)
    # The same validation as `serve`: a config the gateway would refuse is refused here.
    sources = build_sources(cfg, registry if registry is not None else VerifierRegistry())
    by_name = {s.name: (i, s) for i, s in enumerate(sources)}
    if args.source is None:
        if len(by_name) != 1:
            raise ConfigError(
                f"--source: missing: expected one of {', '.join(by_name)} ({args.config} "
                "has several)"
            )
        args.source = next(iter(by_name))
    if args.source not in by_name:
        raise ConfigError(
            f"--source {args.source!r}: no such source in {args.config}; "
            f"configured: {', '.join(by_name)}"
        )
    index, source = by_name[args.source]
    sc = cfg.sources[index]
    method = args.method.upper()
    if method not in source.methods:
        raise ConfigError(
            f"--method {method}: source {source.name!r} accepts {', '.join(source.methods)}"
        )
    body = _read_body(args, stdin)
    if method == "GET" and (args.file is not None or args.example is not None):
        raise ConfigError(
            "--method GET sends no body: drop --file/--example and put the data into "
            "the --url query string (Crystallize sends the entity id as ?id=...)"
        )
    if method != "GET" and args.file is None and args.example is None:
        raise ConfigError(f"--method {method}: expected a body: --file PATH, --file - or --example")

    verifier = source.verifier
    if not isinstance(verifier, Signing):
        raise ConfigError(
            f"sources[{index}].verifier.type: verifier {sc.verifier.type!r} cannot sign "
            "(it has no sign method), so send cannot make requests it accepts"
        )
    if args.mode is not None and args.mode not in verifier.signing_schemes:
        choice = ", ".join(verifier.signing_schemes)
        raise ConfigError(
            f"--mode {args.mode}: verifier {sc.verifier.type!r} "
            + (f"signs with one of {choice}" if choice else "signs one way only")
        )
    secret = ""
    if sc.secrets:
        if not 0 <= args.secret_index < len(sc.secrets):
            raise ConfigError(
                f"--secret-index {args.secret_index}: source {sc.name!r} has "
                f"{len(sc.secrets)} secret(s), indexes 0-{len(sc.secrets) - 1}"
            )
        secret = sc.secrets[args.secret_index].get_secret_value()
    in_header = verifier.event_type_header is not None
    segment = args.event_type if args.event_type is not None and not in_header else None
    url = _request_url(args.url, source.path, segment)

    headers: dict[str, str] = {}
    if body:
        headers["content-type"] = "application/json"
    for text in args.header or ():
        name, value = _parse_header(text)
        headers[name] = value
    signed_url = _signed_url(url, source.public_url, source.path)
    signer = _signer(verifier, secret, args.mode, args.event_type if in_header else None)
    # Signed once now, so a scheme the verifier refuses is a usage error before anything
    # is sent; each request is signed again when it goes out (fresh timestamps and ids).
    signer(method, signed_url, body)
    return Target(
        url=url,
        signed_url=signed_url,
        method=method,
        body=body,
        headers=headers,
        signer=signer,
    )


# -- sending ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    number: int
    status: int | None  # None: no HTTP answer (connection refused, timeout, ...)
    detail: str  # event id on success, else the problem's detail or the error
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def line(self, total: int) -> str:
        prefix = f"[{self.number}/{total}] " if total > 1 else ""
        status = str(self.status) if self.status is not None else "error"
        what = f"id={self.detail}" if self.ok else self.detail
        return f"{prefix}{status}  {what}  {self.seconds * 1000:.1f} ms"


def _describe_answer(response: httpx.Response) -> str:
    try:
        doc: Any = response.json()
    except ValueError:
        doc = None
    if response.is_success:
        event_id = doc.get("id") if isinstance(doc, dict) else None
        if isinstance(event_id, str):
            return event_id
        return "(no id in the answer)"
    if isinstance(doc, dict) and ("title" in doc or "detail" in doc):
        title, detail = doc.get("title", ""), doc.get("detail", "")
        return f"{title}: {detail}" if title and detail else str(title or detail)
    return response.reason_phrase or "error"


async def _send_one(client: httpx.AsyncClient, target: Target, number: int) -> Result:
    headers = dict(target.headers)
    headers.update(target.signer(target.method, target.signed_url, target.body))
    started = time.perf_counter()
    try:
        response = await client.request(
            target.method, target.url, content=target.body or None, headers=headers
        )
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return Result(
            number, None, f"{type(exc).__name__}: {reason}", time.perf_counter() - started
        )
    elapsed = time.perf_counter() - started
    return Result(number, response.status_code, _describe_answer(response), elapsed)


async def send_all(
    target: Target,
    repeat: int,
    concurrency: int,
    request_timeout: float,
    report: Callable[[Result], None],
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Result]:
    """Send ``repeat`` requests with at most ``concurrency`` in flight (``transport``:
    tests hand in an in-process app)."""
    results: list[Result] = []
    numbers = iter(range(1, repeat + 1))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        timeout=request_timeout, limits=limits, transport=transport
    ) as client:

        async def worker() -> None:
            for number in numbers:  # shared iterator: each number is taken once
                result = await _send_one(client, target, number)
                results.append(result)
                report(result)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, repeat)):
                group.create_task(worker())
    return results


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    # ceil(p * n), with a little slack so 0.99 * 100 is 99 despite float rounding.
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values) - 1e-9)))
    return sorted_values[rank - 1]


def summary(results: list[Result], wall_seconds: float) -> str:
    statuses = Counter(str(r.status) if r.status is not None else "error" for r in results)
    counts = ", ".join(f"{status} x{n}" for status, n in sorted(statuses.items()))
    ms = sorted(r.seconds * 1000 for r in results)
    rate = len(results) / wall_seconds if wall_seconds > 0 else 0.0
    return (
        f"sent {len(results)}: {counts}; latency ms p50 {percentile(ms, 0.5):.1f} "
        f"p90 {percentile(ms, 0.9):.1f} p99 {percentile(ms, 0.99):.1f} max {ms[-1]:.1f}; "
        f"{rate:.0f} req/s"
    )


def run(args: argparse.Namespace) -> int:
    target = build_target(args)
    total = args.repeat

    def report(result: Result) -> None:
        if not args.quiet:
            print(result.line(total), flush=True)

    started = time.perf_counter()
    results = asyncio.run(send_all(target, total, args.concurrency, args.timeout, report))
    wall = time.perf_counter() - started
    if total > 1 or args.quiet:
        print(summary(results, wall))
    if all(r.status is None for r in results):
        print(
            f"error: no answer from {target.url} (is the gateway running? `make run` starts "
            "one; --url points elsewhere)",
            file=sys.stderr,
        )
    return 0 if all(r.ok for r in results) else 1


# -- command line -------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 3600 seconds")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``send`` on the gateway's subcommands (``sub`` from ``add_subparsers``)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "send",
        help="send a correctly signed test webhook to a running gateway",
        description="Send a webhook signed with a configured source's verifier scheme "
        "and secret; print status, event id and latency per request.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser, fallback=QUICKSTART)
    parser.add_argument(
        "--source", metavar="NAME", help="a source of the config (default: its only one)"
    )
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--file", metavar="PATH", help="the body, from a file ('-': from stdin)")
    body.add_argument("--example", choices=examples.names(), help="a built-in sample body")
    parser.add_argument(
        "--method", default="POST", type=str.upper, choices=METHODS, help="default POST"
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        help=f"where to send; a bare origin gets the source's path (default {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--mode", choices=("jwt", "hmac"), help="crystallize: signature scheme (default jwt)"
    )
    parser.add_argument(
        "--event-type",
        metavar="TYPE",
        help="github/shopify: the event header; others: appended to the path",
    )
    parser.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="an extra request header (repeatable)",
    )
    parser.add_argument(
        "--secret-index",
        type=int,
        default=0,
        metavar="I",
        help="sign with the source's I-th secret (rotation tests; default 0)",
    )
    parser.add_argument("--repeat", type=_positive, default=1, metavar="N", help="default 1")
    parser.add_argument(
        "--concurrency", type=_positive, default=1, metavar="C", help="requests in flight"
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=10.0, metavar="S", help="per request (default 10)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only the summary, no line per request"
    )
    parser.set_defaults(func=run)
    return parser
