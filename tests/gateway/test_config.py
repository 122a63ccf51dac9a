from __future__ import annotations

from importlib import metadata
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from gateway import config as gwconfig
from gateway.sources import build_sources
from gateway.verifiers import ENTRY_POINT_GROUP
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.support import TEST_VERIFIERS, BodyHmacVerifier
from webhook_common.errors import ConfigError

SECRET = "do-not-print-this-secret-9f2"
ROOT = Path(__file__).resolve().parents[2]


def source(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "shop",
        "verifier": {"type": "body-hmac"},
        "secrets": [SECRET],
    }
    base.update(overrides)
    return base


def parse_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        gwconfig.parse_config(data)
    message = str(info.value)
    assert SECRET not in message
    return message


def build_error(data: dict[str, Any], registry: VerifierRegistry | None = None) -> str:
    cfg = gwconfig.parse_config(data)
    with pytest.raises(ConfigError) as info:
        build_sources(cfg, registry or VerifierRegistry(TEST_VERIFIERS))
    message = str(info.value)
    assert SECRET not in message
    return message


def test_defaults_resolve_per_provider() -> None:
    cfg = gwconfig.parse_config(
        {
            "sources": [
                source(),
                {
                    "name": "crystallize",
                    "verifier": {"type": "crystallize"},
                    "secrets": [SECRET],
                },
            ],
            "consumers": {"anything": "is ignored here"},
        }
    )
    shop, crystallize = build_sources(cfg, VerifierRegistry(TEST_VERIFIERS))
    assert shop.path == "/webhooks/shop"
    assert shop.methods == ("POST",)
    assert shop.body_limit == 1024 * 1024
    assert shop.topic == "webhooks.raw"
    assert shop.forward_headers == ()
    assert isinstance(shop.verifier, BodyHmacVerifier)
    assert crystallize.methods == ("GET", "POST", "PUT", "PATCH", "DELETE")
    assert crystallize.forward_headers == ("x-crystallize-signature",)
    assert crystallize.keys.query_param == "id"
    assert crystallize.keys.entity_get_id
    assert cfg.max_request_size == 1024 * 1024 + gwconfig.RECORD_OVERHEAD
    assert [t.name for t in cfg.topic_specs()] == ["webhooks.raw"]


def test_secret_is_secretstr_and_not_in_repr() -> None:
    cfg = gwconfig.parse_config({"sources": [source()]})
    assert SECRET not in repr(cfg)
    assert cfg.sources[0].secrets[0].get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("overrides", "path", "expected"),
    [
        ({"body_limit": 0}, "sources[0].body_limit: got 0", "greater than or equal to 1"),
        ({"methods": ["GET", "FETCH"]}, "sources[0].methods[1]: got 'FETCH'", "'GET'"),
        ({"path": "webhooks/x"}, "sources[0].path: got 'webhooks/x'", "match pattern"),
        ({"topic": "bad topic"}, "sources[0].topic: got 'bad topic'", "match pattern"),
        ({"key": {"pointers": ["order/id"]}}, "sources[0].key.pointers", "RFC 6901"),
        ({"public_url": "ftp://x/y"}, "sources[0].public_url: got 'ftp://x/y'", "http(s)"),
        ({"forward_headers": ["bad header"]}, "sources[0].forward_headers", "header names"),
        ({"bodylimit": 5}, "sources[0].bodylimit: got 5", "no such key"),
        ({"secrets": [SECRET, {"nested": SECRET}]}, "sources[0].secrets[1]: got <redacted>", ""),
    ],
)
def test_source_errors_name_path_value_and_expectation(
    overrides: dict[str, Any], path: str, expected: str
) -> None:
    message = parse_error({"sources": [source(**overrides)]})
    assert path in message
    assert expected in message


def test_gateway_section_errors() -> None:
    message = parse_error(
        {
            "sources": [source()],
            "gateway": {
                "producer": {"ack_timeout_seconds": 0},
                "trusted_proxies": ["10.0.0.0/33"],
            },
        }
    )
    assert "2 invalid values" in message
    assert "gateway.producer.ack_timeout_seconds: got 0: expected" in message
    assert "gateway.trusted_proxies[0]: got '10.0.0.0/33'" in message


def test_sources_required() -> None:
    assert "sources: missing: expected field required" in parse_error({})


def test_duplicate_names_and_ambiguous_paths() -> None:
    message = parse_error(
        {
            "sources": [
                source(),
                source(path="/webhooks/other"),
                source(name="two", path="/webhooks/other"),
                source(name="three", path="/webhooks/shop/orders"),
            ]
        }
    )
    assert "sources[1].name: got 'shop': expected a name not already used by sources[0]" in (
        message
    )
    assert "sources[2].path: gives path '/webhooks/other'" in message
    assert "sources[3].path: got '/webhooks/shop/orders'" in message


def test_unknown_verifier_type_lists_available() -> None:
    message = build_error({"sources": [source(verifier={"type": "nope"})]})
    assert "sources[0].verifier.type: got 'nope': expected a verifier type, one of" in message
    assert "body-hmac" in message
    assert "crystallize" in message  # real entry points are listed too


def test_verifier_options_validated_with_key_path() -> None:
    message = build_error(
        {
            "sources": [
                source(),
                source(name="b", verifier={"type": "body-hmac", "header": 5, "extra": 1}),
            ]
        }
    )
    assert "sources[1].verifier.header: got 5: expected" in message
    assert "sources[1].verifier.extra: got 1: expected no such key" in message
    assert "sources[0]" not in message


def test_crystallize_options_via_entry_point() -> None:
    message = build_error(
        {"sources": [source(verifier={"type": "crystallize", "mode": "md5"})]},
        VerifierRegistry(),
    )
    assert "sources[0].verifier.mode: got 'md5': expected" in message


def test_verifier_constructor_error_is_named_and_redacted() -> None:
    message = build_error({"sources": [source(secrets=[])]})
    assert "sources[0].verifier: verifier 'body-hmac' (" in message
    assert "refused its config: ValueError: at least one secret" in message


def test_broken_entry_point_names_it_and_its_distribution() -> None:
    registry = VerifierRegistry(use_entry_points=False)
    broken = EntryPoint("broken", "gateway.verifiers.does_not_exist:X", ENTRY_POINT_GROUP)
    # Attach the project's distribution the way importlib.metadata does for real ones.
    broken = broken._for(metadata.distribution("webhook-gateway"))  # type: ignore[attr-defined]
    registry._entry_points["broken"] = [broken]
    with pytest.raises(ConfigError) as info:
        registry.load("broken", "sources[0].verifier.type")
    message = str(info.value)
    assert "sources[0].verifier.type: verifier 'broken'" in message
    assert "'broken = gateway.verifiers.does_not_exist:X'" in message
    assert "distribution webhook-gateway" in message
    assert "ModuleNotFoundError" in message


def test_entry_point_that_is_not_a_verifier() -> None:
    registry = VerifierRegistry({"plain": dict}, use_entry_points=False)
    with pytest.raises(ConfigError, match="is not a verifier class"):
        registry.load("plain")


def test_all_builtin_entry_points_load() -> None:
    registry = VerifierRegistry()
    for name in ("crystallize", "none"):
        assert registry.load(name).__name__.endswith("Verifier")


def test_load_file_interpolates_and_names_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "sources:\n  - name: s\n    verifier: {type: body-hmac}\n"
        "    secrets: ['${SECRET_X}']\n    body_limit: -1\n"
    )
    with pytest.raises(ConfigError) as info:
        gwconfig.load_config(path, env={"SECRET_X": SECRET})
    assert str(path) in str(info.value)
    assert "sources[0].body_limit: got -1" in str(info.value)
    assert SECRET not in str(info.value)


def test_quickstart_config_is_valid() -> None:
    cfg = gwconfig.load_config(
        ROOT / "deploy/config/quickstart.yaml", env={"CRYSTALLIZE_SIGNATURE_SECRET": SECRET}
    )
    (crystallize,) = build_sources(cfg, VerifierRegistry())
    assert crystallize.path == "/webhooks/crystallize"
    assert crystallize.topic == "webhooks.raw"
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert [t.name for t in cfg.topic_specs()] == ["webhooks.raw", "webhooks.dlq"]
