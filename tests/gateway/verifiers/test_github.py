"""GitHub ``X-Hub-Signature-256``."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.verifiers import VerificationError, Verifier
from gateway.verifiers.github import GitHubConfig, GitHubVerifier, sign
from tests.gateway.verifiers._helpers import make_request, secret_list
from webhook_common.errors import ConfigError

# GitHub's published test values:
# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
# ("Testing the webhook payload validation").
DOC_SECRET = "It's a Secret to Everybody"
DOC_BODY = b"Hello, World!"
DOC_HEADER = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

secrets_st = st.text(min_size=1, max_size=40)


def verifier(*secrets: str) -> GitHubVerifier:
    return GitHubVerifier(GitHubConfig(), secret_list(*secrets))


def reason(v: GitHubVerifier, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(make_request(headers, body))
    return info.value.reason


def test_documented_example_verifies_with_delivery_and_event() -> None:
    headers = {
        "X-Hub-Signature-256": DOC_HEADER,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "issues",
    }
    result = verifier(DOC_SECRET).verify(make_request(headers, DOC_BODY))
    assert result.secret_index == 0
    assert result.event_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert result.event_type == "issues"


def test_sign_reproduces_documented_header() -> None:
    assert sign(DOC_BODY, DOC_SECRET) == {"x-hub-signature-256": DOC_HEADER}


def test_is_a_verifier() -> None:
    assert isinstance(verifier("s"), Verifier)


@given(body=st.binary(max_size=2048), secret=secrets_st)
def test_generated_signatures_verify(body: bytes, secret: str) -> None:
    headers = sign(body, secret, delivery="d-1", event="push")
    result = verifier(secret).verify(make_request(headers, body))
    assert (result.secret_index, result.event_id, result.event_type) == (0, "d-1", "push")


@given(body=st.binary(max_size=512), extra=st.binary(min_size=1, max_size=8))
def test_tampered_body_is_mismatch(body: bytes, extra: bytes) -> None:
    assert reason(verifier("s3cret"), sign(body, "s3cret"), body + extra) == "mismatch"


@given(secret=secrets_st, other=secrets_st)
def test_other_secret_is_mismatch(secret: str, other: str) -> None:
    assume(secret != other)
    assert reason(verifier(other), sign(DOC_BODY, secret), DOC_BODY) == "mismatch"


def test_rotation_reports_which_secret_matched() -> None:
    v = verifier("old", "new")
    assert v.verify(make_request(sign(DOC_BODY, "old"), DOC_BODY)).secret_index == 0
    assert v.verify(make_request(sign(DOC_BODY, "new"), DOC_BODY)).secret_index == 1
    assert reason(v, sign(DOC_BODY, "retired"), DOC_BODY) == "mismatch"


def test_one_flipped_hex_digit_is_mismatch() -> None:
    last = DOC_HEADER[-1]
    flipped = DOC_HEADER[:-1] + ("0" if last != "0" else "1")
    assert reason(verifier(DOC_SECRET), {"x-hub-signature-256": flipped}, DOC_BODY) == "mismatch"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing"),
        ({"x-hub-signature-256": ""}, "missing"),
        # The SHA-1 header alone is not accepted.
        ({"x-hub-signature": "sha1=0123456789abcdef0123456789abcdef01234567"}, "missing"),
        ({"x-hub-signature-256": DOC_HEADER.removeprefix("sha256=")}, "malformed"),
        ({"x-hub-signature-256": DOC_HEADER.replace("sha256=", "sha1=")}, "malformed"),
        ({"x-hub-signature-256": DOC_HEADER.replace("sha256=", "SHA256=")}, "malformed"),
        ({"x-hub-signature-256": DOC_HEADER[:-2]}, "malformed"),
        ({"x-hub-signature-256": DOC_HEADER + "00"}, "malformed"),
        ({"x-hub-signature-256": DOC_HEADER[:-1] + "g"}, "malformed"),
        ({"x-hub-signature-256": DOC_HEADER + " "}, "malformed"),
        ({"x-hub-signature-256": "sha256=" + "é" * 64}, "malformed"),
    ],
)
def test_header_format_errors(headers: dict[str, str], expected: str) -> None:
    assert reason(verifier(DOC_SECRET), headers, DOC_BODY) == expected


def test_error_detail_names_header_not_value() -> None:
    with pytest.raises(VerificationError) as info:
        verifier(DOC_SECRET).verify(make_request({"x-hub-signature-256": "sha256=zz"}, b""))
    assert "x-hub-signature-256" in info.value.detail
    assert "zz" not in info.value.detail


def test_missing_delivery_and_event_are_none() -> None:
    result = verifier(DOC_SECRET).verify(make_request(sign(DOC_BODY, DOC_SECRET), DOC_BODY))
    assert (result.event_id, result.event_type) == (None, None)


@pytest.mark.parametrize("secrets", [[], [""], ["ok", ""]])
def test_no_or_empty_secret_is_a_config_error(secrets: list[str]) -> None:
    with pytest.raises(ConfigError, match="secret"):
        verifier(*secrets)


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        GitHubConfig.model_validate({"algorithm": "sha1"})
