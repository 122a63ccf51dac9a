"""The example plugin in ``examples/verifier-plugin`` works as documented.

It is "installed" the way an installer would: a ``.dist-info`` whose ``entry_points.txt``
is generated from the example's own ``pyproject.toml``, on ``sys.path`` next to its
sources. The gateway's registry then finds it by name through :mod:`importlib.metadata`,
like any third-party plugin, and the fuzz properties apply to it as to the built-ins.
"""

from __future__ import annotations

import io
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gateway import send as gsend
from gateway.__main__ import build_parser
from gateway.verifiers import ENTRY_POINT_GROUP, VerificationError, Verifier
from gateway.verifiers.registry import VerifierRegistry
from tests.gateway.verifiers._helpers import make_request
from tests.gateway.verifiers.test_fuzz import body_st, check, header_value
from tests.plugin_dist import lay_out_project
from webhook_common.errors import ConfigError

PLUGIN = Path(__file__).resolve().parents[3] / "examples" / "verifier-plugin"
NAME = "gitlab-token"
MODULE = "webhook_gateway_gitlab"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VerifierRegistry]:
    entry_points = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"][
        "entry-points"
    ][ENTRY_POINT_GROUP]
    assert entry_points == {NAME: f"{MODULE}:GitLabTokenVerifier"}
    for path in reversed(lay_out_project(PLUGIN, tmp_path)):
        monkeypatch.syspath_prepend(str(path))
    yield VerifierRegistry()
    sys.modules.pop(MODULE, None)


def build(registry: VerifierRegistry, *tokens: str, **options: str) -> Verifier:
    return registry.build_verifier(0, NAME, options, [SecretStr(t) for t in tokens])


def test_found_by_name_through_entry_points(registry: VerifierRegistry) -> None:
    assert NAME in registry.names()
    assert registry.load(NAME).__module__ == MODULE


def test_verifies_gitlab_token_with_rotation(registry: VerifierRegistry) -> None:
    verifier = build(registry, "old-token", "new-token")
    headers = {
        "X-Gitlab-Token": "new-token",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Event-UUID": "2ba2b0a9-b3b2-4d51-8e62-6ea6b1a8a8f0",
    }
    result = verifier.verify(make_request(headers, b"{}"))
    assert result.secret_index == 1
    assert result.event_type == "Push Hook"
    assert result.event_id == "2ba2b0a9-b3b2-4d51-8e62-6ea6b1a8a8f0"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"X-Gitlab-Token": "wrong"}, "mismatch"),
        ({"X-Gitlab-Token": "token "}, "mismatch"),
        ({"X-Gitlab-Token": "tok€n"}, "malformed"),
    ],
)
def test_rejections(registry: VerifierRegistry, headers: dict[str, str], reason: str) -> None:
    with pytest.raises(VerificationError) as info:
        build(registry, "token").verify(make_request(headers, b"{}"))
    assert info.value.reason == reason


def test_send_signs_for_the_plugin(registry: VerifierRegistry, tmp_path: Path) -> None:
    # `gateway send` goes through the registry and the plugin's own `sign`: no
    # per-provider code in send knows about this verifier.
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"sources": [{"name": "gl", "verifier": {"type": NAME}, "secrets": ["tok-1"]}]}
        )
    )
    args = build_parser().parse_args(
        [
            "send",
            "--config",
            str(config),
            "--source",
            "gl",
            "--file",
            "-",
            "--event-type",
            "Push Hook",
        ]
    )
    target = gsend.build_target(args, io.TextIOWrapper(io.BytesIO(b"{}")), registry=registry)
    headers = target.signer(target.method, target.signed_url, target.body)
    assert headers["x-gitlab-token"] == "tok-1"
    assert str(target.url).endswith("/webhooks/gl")  # the type went in a header
    result = build(registry, "tok-1").verify(make_request(headers, target.body))
    assert result.event_type == "Push Hook"
    assert result.event_id == headers["x-gitlab-event-uuid"]


def test_configurable_header(registry: VerifierRegistry) -> None:
    verifier = build(registry, "token", header="X-Custom-Token")
    assert verifier.verify(make_request({"X-Custom-Token": "token"}, b""))


def test_config_errors_are_reported_per_source(registry: VerifierRegistry) -> None:
    with pytest.raises(ConfigError, match=r"sources\[0\]\.verifier\.bogus"):
        build(registry, "token", bogus="1")
    with pytest.raises(ConfigError, match="at least one non-empty token"):
        build(registry)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(
        st.sampled_from(["x-gitlab-token", "x-gitlab-event"]) | st.text(max_size=20),
        header_value,
        max_size=4,
    ),
    body=body_st,
)
def test_fails_closed_on_arbitrary_input(
    registry: VerifierRegistry, headers: dict[str, str], body: bytes
) -> None:
    check(NAME, build(registry, "token"), headers, body)
