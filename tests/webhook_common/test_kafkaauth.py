"""Kafka TLS and SASL settings: what is refused at load (naming the key), and the client
arguments built from the rest. The broker side: tests/integration/test_kafka_sasl_ssl.py."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiokafka.abc import AbstractTokenProvider

from webhook_common.config import KafkaSettings, validate
from webhook_common.errors import ConfigError
from webhook_common.kafkaauth import TOKEN_PROVIDERS, FileTokenProvider, client_kwargs
from webhook_common.plugins import Registry

PASSWORD = "pw-never-shown-4711"


def settings(**kafka: Any) -> KafkaSettings:
    return validate(KafkaSettings, kafka, at=("kafka",))


def refusal(**kafka: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(**kafka)
    text = str(caught.value)
    assert PASSWORD not in text
    return text


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        (
            {"security_protocol": "SASL_SSL"},
            "kafka.sasl_mechanism: missing: expected one of PLAIN, SCRAM-SHA-256, "
            "SCRAM-SHA-512, OAUTHBEARER when security_protocol is 'SASL_SSL'",
        ),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": PASSWORD},
            "kafka.sasl_mechanism: got 'PLAIN': expected no value when security_protocol is "
            "'PLAINTEXT'",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
            "kafka.sasl_username: missing: expected a value with sasl_mechanism 'SCRAM-SHA-512'",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "u",
            },
            "kafka.sasl_password: missing: expected a value",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            "kafka.sasl_oauth: missing: expected a token provider when sasl_mechanism is "
            "'OAUTHBEARER'",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauth": {"type": "file", "path": "t"},
                "sasl_password": PASSWORD,
            },
            "kafka.sasl_password: got <redacted>: expected no value with OAUTHBEARER",
        ),
        (
            {"ssl_cafile": "/ca.pem"},
            "kafka.ssl_cafile: got '/ca.pem': expected no value when security_protocol is "
            "'PLAINTEXT' (no TLS)",
        ),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "k.pem"},
            "kafka.ssl_certfile: missing: expected the client certificate",
        ),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_key(
    kafka: dict[str, Any], expected: str
) -> None:
    assert expected in refusal(**kafka)


def test_tls_trusts_the_system_store_and_checks_hostnames_by_default() -> None:
    kwargs = settings(security_protocol="SSL").client_kwargs()
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0  # the system's CAs
    assert "sasl_mechanism" not in kwargs


def test_scram_over_tls_carries_the_password_only_to_the_client() -> None:
    k = settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="alice",
        sasl_password=PASSWORD,
        ssl_check_hostname=False,
    )
    kwargs = k.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("alice", PASSWORD)
    assert not kwargs["ssl_context"].check_hostname
    assert PASSWORD not in repr(k)


def make_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA certificate and a client certificate + encrypted key it signed."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-passout", f"pass:{PASSWORD}", "-keyout", "client.key",
        "-out", "client.csr", "-subj", "/CN=client")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.pem", "-days", "2")  # fmt: skip
    return tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"


def test_a_private_ca_replaces_the_system_store_and_a_client_certificate_loads(
    tmp_path: Path,
) -> None:
    ca, cert, key = make_ca(tmp_path)
    k = settings(
        security_protocol="SSL",
        ssl_cafile=str(ca),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_key_password=PASSWORD,
    )
    context = k.client_kwargs()["ssl_context"]
    assert context.cert_store_stats()["x509_ca"] == 1


def test_unusable_tls_files_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    _, cert, key = make_ca(tmp_path)
    missing = settings(security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"kafka\.ssl_cafile: got '.*nope\.pem': expected a"):
        client_kwargs(missing)
    wrong = settings(
        security_protocol="SSL",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_key_password="not-the-password",
    )
    with pytest.raises(ConfigError, match=r"kafka\.ssl_certfile: got") as caught:
        client_kwargs(wrong)
    assert "not-the-password" not in str(caught.value)


async def test_the_file_token_provider_reads_the_file_again_at_each_request(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    k = settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth={"type": "file", "path": str(token)},
    )
    registry: Registry[Any] = Registry(TOKEN_PROVIDERS, {"file": FileTokenProvider})
    from webhook_common.kafkaauth import token_provider

    provider = token_provider(k, registry)
    assert isinstance(provider, AbstractTokenProvider)
    assert await provider.token() == "first"
    token.write_text("renewed")
    assert await provider.token() == "renewed"
    token.write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        await provider.token()


def test_an_unknown_token_provider_is_a_plugin_error_naming_the_key() -> None:
    k = settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth={"type": "msk-iam"},
    )
    with pytest.raises(ConfigError, match=r"kafka\.sasl_oauth\.type: got 'msk-iam': expected"):
        client_kwargs(k)


def test_the_file_provider_is_an_entry_point_like_every_plugin() -> None:
    assert "file" in Registry(TOKEN_PROVIDERS).names()
