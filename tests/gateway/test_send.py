"""``python -m gateway send``: what it signs passes the real verifiers in the real app.

Each case writes a config file, builds the command line as a user types it, and sends
through the gateway's own ASGI app (verifiers from the entry points, a fake producer),
so the signature, the signed URL and the key rules are all checked by production code.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway import examples
from gateway import send as gsend
from gateway.__main__ import build_parser, main
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.support import TEST_VERIFIERS, FakeProducer, SentRecord, free_port, metric
from tests.gateway.support import build as build_app
from webhook_common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "send-test-secret-0123456789"
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-key-bytes-32!!").decode()


def write_config(tmp_path: Path, sources: list[dict[str, Any]]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["send", *argv])


async def deliver(
    tmp_path: Path,
    sources: list[dict[str, Any]],
    *argv: str,
    repeat: int = 1,
    concurrency: int = 1,
    stdin: bytes = b"",
) -> tuple[list[gsend.Result], FakeProducer, Any]:
    """Run `send` for ``sources[0]`` against the gateway app built from the same sources."""
    path = write_config(tmp_path, sources)
    args = parse("--config", str(path), "--source", sources[0]["name"], *argv)
    target = gsend.build_target(args, stdin=_Stdin(stdin))
    app, _, producer, registry = build_app(sources)
    results = await gsend.send_all(
        target, repeat, concurrency, 10.0, lambda r: None, transport=httpx.ASGITransport(app=app)
    )
    return results, producer, registry


class _Stdin(io.TextIOWrapper):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")


def only(producer: FakeProducer) -> SentRecord:
    assert len(producer.records) == 1, producer.records
    return producer.records[0]


def accepted(results: list[gsend.Result]) -> None:
    assert [r.status for r in results] == [202] * len(results), [r.detail for r in results]


# -- every verifier type ---------------------------------------------------------------


async def test_crystallize_jwt_is_the_default_and_keys_by_order_id(tmp_path: Path) -> None:
    sources = [{"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    results, producer, _ = await deliver(tmp_path, sources, "--example", "order")
    accepted(results)
    record = only(producer)
    assert record.key == b"68e4fe1da9733a66efd88673"
    assert record.value == examples.body("order")
    token = record.header("http-header-x-crystallize-signature")
    assert token.count(".") == 2  # a JWT, not the hex HMAC
    assert results[0].detail == record.header("ce_id")  # the id printed is the event id


async def test_crystallize_hmac_mode(tmp_path: Path) -> None:
    sources = [{"name": "c", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    results, producer, _ = await deliver(tmp_path, sources, "--example", "item", "--mode", "hmac")
    accepted(results)
    record = only(producer)
    assert len(record.header("http-header-x-crystallize-signature")) == 64
    assert record.key == b"6717c2c0f1d6a4b1d2e3f405"


async def test_crystallize_signs_public_url_tenant_and_event_type_path(tmp_path: Path) -> None:
    # The JWT binds the URL: behind a proxy it must be the public one, not where we send.
    sources = [
        {
            "name": "crystallize",
            "verifier": {"type": "crystallize", "mode": "jwt", "tenant_identifier": "acme"},
            "secrets": [SECRET],
            "public_url": "https://hooks.example.com/webhooks/crystallize",
        }
    ]
    results, producer, _ = await deliver(
        tmp_path, sources, "--example", "customer", "--event-type", "customer.updated"
    )
    accepted(results)
    record = only(producer)
    assert record.header("ce_type") == "customer.updated"
    assert record.key == b"bard@crystallize.com"


async def test_crystallize_get_sends_the_id_in_the_query(tmp_path: Path) -> None:
    sources = [{"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    results, producer, _ = await deliver(
        tmp_path,
        sources,
        "--method",
        "get",
        "--url",
        "http://127.0.0.1:8080/webhooks/crystallize?id=ord-7&concern=order&event=update",
    )
    accepted(results)
    record = only(producer)
    assert (record.key, record.value) == (b"ord-7", b"")
    assert record.header("ce_type") == "order.update"


async def test_second_secret_with_secret_index(tmp_path: Path) -> None:
    sources = [
        {"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": ["new", SECRET]}
    ]
    results, _, registry = await deliver(
        tmp_path, sources, "--example", "pipeline", "--secret-index", "1"
    )
    accepted(results)
    matched = metric(
        registry, "webhookgw_ingress_secret_matched_total", source="crystallize", index="1"
    )
    assert matched == 1


async def test_standard_webhooks(tmp_path: Path) -> None:
    sources = [{"name": "svix", "verifier": {"type": "standard-webhooks"}, "secrets": [WHSEC]}]
    body = b'{"type": "invoice.paid", "data": {"id": "in_1"}}'
    results, producer, _ = await deliver(tmp_path, sources, "--file", "-", stdin=body)
    accepted(results)
    record = only(producer)
    assert record.header("ce_type") == "invoice.paid"
    assert record.header("ce_id").startswith("msg_")
    assert record.value == body


async def test_stripe(tmp_path: Path) -> None:
    sources = [{"name": "stripe", "verifier": {"type": "stripe"}, "secrets": ["whsec_stripe"]}]
    body_file = tmp_path / "evt.json"
    body_file.write_bytes(b'{"id": "evt_1", "type": "charge.succeeded"}')
    results, producer, _ = await deliver(tmp_path, sources, "--file", str(body_file))
    accepted(results)
    assert only(producer).header("ce_id") == "evt_1"


async def test_github_event_type_goes_into_its_header(tmp_path: Path) -> None:
    sources = [{"name": "gh", "verifier": {"type": "github"}, "secrets": [SECRET]}]
    results, producer, _ = await deliver(
        tmp_path, sources, "--example", "order", "--event-type", "push", repeat=2
    )
    accepted(results)
    assert [r.header("ce_type") for r in producer.records] == ["push", "push"]
    # A fresh delivery id per request, but GitHub does not sign it: the same body is the
    # same event (a replay with a new id is a duplicate).
    assert len({r.header("ce_providerid") for r in producer.records}) == 2
    assert len({r.header("ce_id") for r in producer.records}) == 1


async def test_shopify(tmp_path: Path) -> None:
    sources = [{"name": "shop", "verifier": {"type": "shopify"}, "secrets": [SECRET]}]
    results, producer, _ = await deliver(
        tmp_path, sources, "--example", "order", "--event-type", "orders/create"
    )
    accepted(results)
    assert only(producer).header("ce_type") == "orders/create"


async def test_generic_hmac_with_timestamp_prefix_base64_and_id_header(tmp_path: Path) -> None:
    verifier = {
        "type": "generic-hmac",
        "header": "X-Sig",
        "algorithm": "sha512",
        "encoding": "base64",
        "prefix": "v1=",
        "timestamp_header": "X-Ts",
        "id_header": "X-Delivery",
        "type_header": "X-Event",
    }
    sources = [{"name": "acme", "verifier": verifier, "secrets": [SECRET]}]
    results, producer, _ = await deliver(
        tmp_path, sources, "--example", "order", "--event-type", "thing.happened"
    )
    accepted(results)
    record = only(producer)
    assert record.header("ce_type") == "thing.happened"
    assert record.header("ce_id") == results[0].detail


async def test_none_verifier_sends_unsigned(tmp_path: Path) -> None:
    sources = [{"name": "open", "verifier": {"type": "none", "insecure": True}}]
    results, producer, _ = await deliver(
        tmp_path, sources, "--example", "order", "--header", "X-Extra: yes"
    )
    accepted(results)
    assert only(producer).value == examples.body("order")


async def test_wrong_secret_is_reported_as_the_gateways_401(tmp_path: Path) -> None:
    sources = [{"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    path = write_config(tmp_path, sources)
    args = parse("--config", str(path), "--source", "crystallize", "--example", "order")
    target = gsend.build_target(args)
    other = [{"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": ["other"]}]
    app, _, producer, _ = build_app(other)
    (result,) = await gsend.send_all(
        target, 1, 1, 10.0, lambda r: None, transport=httpx.ASGITransport(app=app)
    )
    assert result.status == 401
    assert not result.ok
    assert "no configured secret" in result.detail
    assert producer.records == []
    assert result.line(1).startswith("401  ")


# -- repeats, output -----------------------------------------------------------------


async def test_repeat_with_concurrency_sends_each_number_once(tmp_path: Path) -> None:
    sources = [{"name": "gh", "verifier": {"type": "github"}, "secrets": [SECRET]}]
    results, producer, _ = await deliver(
        tmp_path, sources, "--example", "item", repeat=25, concurrency=4
    )
    accepted(results)
    assert sorted(r.number for r in results) == list(range(1, 26))
    assert len(producer.records) == 25
    text = gsend.summary(results, 1.0)
    assert text.startswith("sent 25: 202 x25; latency ms p50 ")
    assert "[3/25] 202  id=" in next(r for r in results if r.number == 3).line(25)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert gsend.percentile(values, 0.5) == 50.0
    assert gsend.percentile(values, 0.99) == 99.0
    assert gsend.percentile([7.0], 0.9) == 7.0
    assert gsend.percentile([], 0.5) == 0.0


def test_examples_are_crystallize_shaped_and_order_is_the_documented_one() -> None:
    order = json.loads(examples.body("order"))["order"]["get"]
    assert order["id"] == "68e4fe1da9733a66efd88673"
    assert order["customer"]["firstName"] == "Bård"
    assert [line["sku"] for line in order["cart"]] == ["4958411", "3795082"]
    assert order["total"] == {"currency": "EUR", "gross": 45.1125, "net": 36.09}
    assert "Bård".encode() in examples.body("order")  # UTF-8, not \\u escapes
    for name in examples.names():
        (entity,) = json.loads(examples.body(name))
        assert set(json.loads(examples.body(name))[entity]) == {"get"}


# -- the command line: errors are one line, exit statuses -------------------------------


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "send", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert text in result.stderr


def test_help_has_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--example order" in result.stdout
    for name in examples.names():
        assert name in result.stdout


def test_gateway_not_running_is_status_1_with_a_hint(tmp_path: Path) -> None:
    sources = [{"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    path = write_config(tmp_path, sources)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    result = run_cli(
        "--config", str(path), "--source", "crystallize", "--example", "order", "--url", url
    )
    one_line_error(result, 1, "is the gateway running?")
    assert result.stdout.startswith("error  ConnectError")


def test_quickstart_secret_unset_names_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRYSTALLIZE_SIGNATURE_SECRET"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "send",
            "--config",
            "deploy/config/quickstart.yaml",
            "--source",
            "crystallize",
            "--example",
            "order",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    one_line_error(result, 2, "${CRYSTALLIZE_SIGNATURE_SECRET} is not set")


@pytest.mark.parametrize(
    ("extra", "sources", "message"),
    [
        (["--source", "nope", "--example", "order"], None, "--source 'nope': no such source"),
        (["--source", "c", "--method", "GET", "--example", "order"], None, "sends no body"),
        (["--source", "c"], None, "expected a body"),
        (["--source", "c", "--file", "/does/not/exist"], None, "--file '/does/not/exist'"),
        (["--source", "c", "--example", "order", "--url", "ftp://x"], None, "http(s) URL"),
        (["--source", "c", "--example", "order", "--secret-index", "3"], None, "1 secret(s)"),
        (
            ["--source", "c", "--example", "order", "--mode", "jwt"],
            [{"name": "c", "verifier": {"type": "crystallize", "mode": "hmac"}, "secrets": ["s"]}],
            "accepts only hmac",
        ),
        (
            ["--source", "c", "--example", "order", "--mode", "hmac"],
            [{"name": "c", "verifier": {"type": "github"}, "secrets": ["s"]}],
            "--mode hmac: verifier 'github' signs one way only",
        ),
        (
            ["--source", "c", "--example", "order", "--header", "no-colon"],
            None,
            "expected 'Name: value'",
        ),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    sources: list[dict[str, Any]] | None,
    message: str,
) -> None:
    default = [{"name": "c", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    path = write_config(tmp_path, sources or default)
    assert main(["send", "--config", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert message in err


def test_plugin_verifier_without_signing_is_refused(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, [{"name": "p", "verifier": {"type": "body-hmac"}, "secrets": [SECRET]}]
    )
    args = parse("--config", str(path), "--source", "p", "--example", "order")
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.verifier\.type: verifier 'body-hmac' cannot sign"
    ):
        gsend.build_target(args, registry=VerifierRegistry(TEST_VERIFIERS))


# -- the quick start without flags -----------------------------------------------------


def test_config_comes_from_the_environment_then_the_quick_start_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, [{"name": "c", "verifier": {"type": "none", "insecure": True}}])
    monkeypatch.setenv("WEBHOOK_GATEWAY_CONFIG", str(path))
    assert parse("--example", "order").config == str(path)
    monkeypatch.delenv("WEBHOOK_GATEWAY_CONFIG")
    monkeypatch.chdir(ROOT)
    assert parse("--example", "order").config == "deploy/config/quickstart.yaml"
    monkeypatch.chdir(tmp_path)  # neither: --config is required, as on every command
    with pytest.raises(SystemExit):
        parse("--example", "order")


async def test_the_only_source_is_the_default_and_several_need_source(tmp_path: Path) -> None:
    one = [{"name": "crystallize", "verifier": {"type": "crystallize"}, "secrets": [SECRET]}]
    args = parse("--config", str(write_config(tmp_path, one)), "--example", "order")
    target = gsend.build_target(args, stdin=_Stdin(b""))
    app, _, _, _ = build_app(one)
    results = await gsend.send_all(
        target, 1, 1, 10.0, lambda r: None, transport=httpx.ASGITransport(app=app)
    )
    accepted(results)
    two = [*one, {"name": "shop", "verifier": {"type": "none", "insecure": True}}]
    args = parse("--config", str(write_config(tmp_path, two)), "--example", "order")
    with pytest.raises(ConfigError, match="--source: missing: expected one of crystallize, shop"):
        gsend.build_target(args, stdin=_Stdin(b""))
