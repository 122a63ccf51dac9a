from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from webhook_common.config import (
    ConfigPath,
    KafkaSettings,
    StrictModel,
    config_dir_of,
    format_path,
    interpolate,
    load_file,
    validate,
)
from webhook_common.errors import ConfigError


class Source(StrictModel):
    name: str
    secrets: list[SecretStr] = Field(min_length=1)
    body_limit: int = Field(default=1024, gt=0)


class Doc(StrictModel):
    kafka: KafkaSettings = KafkaSettings()
    sources: list[Source]


def test_interpolation_with_default_and_set_variable() -> None:
    env = {"HOST": "kafka:9092", "EMPTY": ""}
    data = {"a": "${HOST}", "b": ["${MISSING:-x}", "pre-${HOST}-post"], "c": "${EMPTY:-d}", "n": 3}
    assert interpolate(data, env) == {
        "a": "kafka:9092",
        "b": ["x", "pre-kafka:9092-post"],
        "c": "d",
        "n": 3,
    }


def test_interpolation_escape_keeps_literal() -> None:
    assert interpolate({"a": "$${NOT_A_VAR}"}, {}) == {"a": "${NOT_A_VAR}"}


def test_missing_variable_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        interpolate({"sources": [{"secrets": ["${SIG_SECRET}"]}]}, {})
    msg = str(info.value)
    assert "sources[0].secrets[0]" in msg
    assert "SIG_SECRET" in msg


def test_validation_error_names_path_value_expectation(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sources:\n  - name: shop\n    secrets: [s3cr3t-value]\n    body_limit: -5\n")
    with pytest.raises(ConfigError) as info:
        validate(Doc, load_file(cfg, env={}), source=str(cfg))
    msg = str(info.value)
    assert "sources[0].body_limit: got -5: expected" in msg
    assert "greater than 0" in msg
    assert "s3cr3t-value" not in msg


def test_secret_value_is_never_shown() -> None:
    data = {"sources": [{"name": "x", "secrets": "hunter2-very-secret", "extra": 1}]}
    with pytest.raises(ConfigError) as info:
        validate(Doc, data)
    msg = str(info.value)
    assert "hunter2-very-secret" not in msg
    assert "sources[0].secrets: got <redacted>" in msg
    assert "sources[0].extra: got 1: expected no such key" in msg


def test_missing_key_is_reported_as_missing() -> None:
    with pytest.raises(ConfigError, match=r"sources: missing: expected field required"):
        validate(Doc, {})


def test_kafka_password_redacted_and_literal_checked() -> None:
    data = {"kafka": {"security_protocol": "TLS", "sasl_password": 5}, "sources": []}
    with pytest.raises(ConfigError) as info:
        validate(Doc, data)
    msg = str(info.value)
    assert "kafka.security_protocol: got 'TLS': expected input should be 'PLAINTEXT'" in msg
    assert "kafka.sasl_password: got <redacted>" in msg


def test_load_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_file(bad)
    seq = tmp_path / "seq.yaml"
    seq.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_file(seq)


def test_client_kwargs_expose_password_only_to_the_client() -> None:
    k = KafkaSettings(
        bootstrap_servers="b:9092",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("pw-123456"),
        security_protocol="SASL_SSL",
    )
    kwargs = k.client_kwargs()
    assert kwargs["sasl_plain_password"] == "pw-123456"
    assert "pw-123456" not in repr(k)


def test_format_path() -> None:
    assert format_path(["sources", 0, "verifier", "mode"]) == "sources[0].verifier.mode"
    assert format_path([]) == "<root>"


def test_sections_limit_interpolation_to_what_a_process_reads(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka: {client_id: '${CID}'}\nsources:\n  - secrets: ['${ONLY_GATEWAY_HAS}']\n")
    data = load_file(cfg, env={"CID": "c1"}, sections=("kafka", "consumers"))
    assert data == {"kafka": {"client_id": "c1"}}
    with pytest.raises(ConfigError, match="ONLY_GATEWAY_HAS"):
        load_file(cfg, env={"CID": "c1"})


def test_unknown_top_level_section_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka: {}\nsoruces: []\n")
    with pytest.raises(ConfigError, match="soruces: no such section: expected one of kafka"):
        load_file(cfg, env={})


def test_password_in_a_url_value_is_redacted() -> None:
    class Sink(StrictModel):
        dsn: int

    with pytest.raises(ConfigError) as info:
        validate(Sink, {"dsn": "postgresql://app:pa55word@db:5432/x"})
    msg = str(info.value)
    assert "pa55word" not in msg
    assert "postgresql://app:<redacted>@db:5432/x" in msg


class _Paths(StrictModel):
    file: ConfigPath
    optional: ConfigPath | None = None
    default: ConfigPath = Path("./var/x")


def test_a_relative_config_path_is_taken_from_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/home/someone")
    conf = tmp_path / "conf"
    got = validate(_Paths, {"file": "a/b.txt", "optional": "/abs/c"}, config_dir=conf)
    assert got.file == conf / "a" / "b.txt"
    assert got.optional == Path("/abs/c")  # absolute: as written
    assert got.default == Path("./var/x")  # a default is written in no file
    assert validate(_Paths, {"file": "~/t"}, config_dir=conf).file == Path("/home/someone/t")
    # Without a file (a model built in code): the working directory, as any Path.
    assert validate(_Paths, {"file": "a"}).file == Path("a")
    assert config_dir_of("conf/c.yaml") == conf


def test_a_relative_path_from_the_environment_follows_the_same_rule(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "c.yaml"
    config.parent.mkdir()
    config.write_text(
        "kafka: {security_protocol: SSL, ssl_cafile: '${CA:-ca.pem}'}\n"
        "consumers: {sinks: {out: {type: file, path: '${EVENTS_FILE}'}}}\n"
    )
    from consumers.config import load_config

    loaded = load_config(config, env={"EVENTS_FILE": "x"})
    assert loaded.kafka.ssl_cafile == config.parent / "ca.pem"
    assert loaded.kafka.config_dir == config.parent
    # The sinks' options are validated when the sinks are built (consumers.plugins).
    assert loaded.consumers.sinks["out"]["path"] == "x"


async def test_the_file_token_provider_reads_a_token_beside_the_config(tmp_path: Path) -> None:
    from webhook_common.kafkaauth import token_provider

    (tmp_path / "token").write_text("tok-1\n")
    kafka = validate(
        KafkaSettings,
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth": {"type": "file", "path": "token"},
        },
        config_dir=tmp_path,
    )
    assert await token_provider(kafka).token() == "tok-1"
