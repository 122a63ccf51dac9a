"""The configurable ``generic-hmac`` verifier.

Two providers' published vectors expressed as generic configs: GitHub's
(https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries) and
Slack's worked example, a timestamped scheme over ``v0:{timestamp}:{body}``
(https://api.slack.com/authentication/verifying-requests-from-slack).
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.verifiers import VerificationError
from gateway.verifiers.generic import GenericHmacConfig, GenericHmacVerifier, sign
from tests.gateway.verifiers._helpers import FixedClock, make_request, secret_list
from webhook_common.config import validate
from webhook_common.errors import ConfigError

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
    b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SLACK = {
    "header": "X-Slack-Signature",
    "prefix": "v0=",
    "timestamp_header": "X-Slack-Request-Timestamp",
    "template": "v0:{timestamp}:{body}",
}
GITHUB = {"header": "X-Hub-Signature-256", "prefix": "sha256=", "id_header": "X-GitHub-Delivery"}


def verifier(options: dict[str, Any], *secrets: str, now: float = SLACK_TS) -> GenericHmacVerifier:
    config = validate(GenericHmacConfig, options)
    return GenericHmacVerifier(config, secret_list(*secrets), clock=FixedClock(now))


def reason(v: GenericHmacVerifier, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(make_request(headers, body))
    return info.value.reason


def slack_headers(signature: str = SLACK_SIGNATURE, ts: str = str(SLACK_TS)) -> dict[str, str]:
    return {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": ts}


def test_slack_vector_verifies() -> None:
    v = verifier(SLACK, SLACK_SECRET)
    assert v.verify(make_request(slack_headers(), SLACK_BODY)).secret_index == 0


def test_sign_reproduces_slack_vector() -> None:
    config = validate(GenericHmacConfig, SLACK)
    headers = sign(SLACK_BODY, SLACK_SECRET, config, timestamp=SLACK_TS)
    assert headers == {
        "x-slack-signature": SLACK_SIGNATURE,
        "x-slack-request-timestamp": str(SLACK_TS),
    }


def test_github_vector_as_generic_config() -> None:
    headers = {
        "X-Hub-Signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ),
        "X-GitHub-Delivery": "d-42",
    }
    result = verifier(GITHUB, "It's a Secret to Everybody").verify(
        make_request(headers, b"Hello, World!")
    )
    assert (result.secret_index, result.event_id, result.event_type) == (0, "d-42", None)


@pytest.mark.parametrize(("age", "expected"), [(301, "expired"), (-301, "future")])
def test_slack_outside_window(age: int, expected: str) -> None:
    assert reason(
        verifier(SLACK, SLACK_SECRET, now=SLACK_TS + age), slack_headers(), SLACK_BODY
    ) == (expected)


def test_slack_tampering() -> None:
    v = verifier(SLACK, SLACK_SECRET)
    assert reason(v, slack_headers(), SLACK_BODY + b"&x=1") == "mismatch"
    assert reason(v, slack_headers(ts=str(SLACK_TS + 1)), SLACK_BODY) == "mismatch"
    assert reason(verifier(SLACK, "other"), slack_headers(), SLACK_BODY) == "mismatch"
    assert reason(v, {"X-Slack-Signature": SLACK_SIGNATURE}, SLACK_BODY) == "missing"
    assert reason(v, slack_headers(ts="soon"), SLACK_BODY) == "malformed"
    assert reason(v, slack_headers(SLACK_SIGNATURE[3:]), SLACK_BODY) == "malformed"  # no v0=
    assert reason(v, {"X-Slack-Request-Timestamp": str(SLACK_TS)}, SLACK_BODY) == "missing"


def independent(secret: str, message: bytes, algorithm: str, encoding: str) -> str:
    digest = hmac.new(secret.encode(), message, algorithm).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("prefix", ["", "sha=", "t1 "])
@given(body=st.binary(max_size=1024), secret=st.text(min_size=1, max_size=30))
def test_every_combination_against_independent_hmac(
    algorithm: str, encoding: str, prefix: str, body: bytes, secret: str
) -> None:
    options = {"algorithm": algorithm, "encoding": encoding, "prefix": prefix}
    headers = {"x-signature": prefix + independent(secret, body, algorithm, encoding)}
    assert verifier(options, secret).verify(make_request(headers, body)).secret_index == 0
    # And sign() agrees with the independent construction.
    assert sign(body, secret, validate(GenericHmacConfig, options)) == headers


@given(body=st.binary(max_size=512), ts=st.integers(SLACK_TS - 300, SLACK_TS + 300))
def test_default_timestamp_template_is_dot_joined(body: bytes, ts: int) -> None:
    options = {"timestamp_header": "X-Timestamp", "algorithm": "sha512"}
    message = str(ts).encode() + b"." + body
    headers = {"x-signature": independent("k", message, "sha512", "hex"), "x-timestamp": str(ts)}
    assert verifier(options, "k").verify(make_request(headers, body))


def test_literal_braces_in_template() -> None:
    options = {"timestamp_header": "T", "template": "{{{timestamp}}}{body}"}
    headers = {
        "x-signature": independent("k", b"{%d}b" % SLACK_TS, "sha256", "hex"),
        "t": str(SLACK_TS),
    }
    assert verifier(options, "k").verify(make_request(headers, b"b"))


def test_sha256_signature_under_sha512_config_is_malformed() -> None:
    headers = {"x-signature": independent("k", b"b", "sha256", "hex")}
    assert reason(verifier({"algorithm": "sha512"}, "k"), headers, b"b") == "malformed"


def test_rotation_and_type_header() -> None:
    v = verifier({"type_header": "X-Event"}, "old", "new")
    headers = {"x-signature": independent("new", b"b", "sha256", "hex"), "x-event": "ping"}
    result = v.verify(make_request(headers, b"b"))
    assert (result.secret_index, result.event_type) == (1, "ping")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"template": "{timestamp}.{body}"}, "template"),  # no timestamp_header
        ({"timestamp_header": "X-T", "template": "{body}"}, "template"),  # timestamp unsigned
        ({"template": "{timestamp_header}"}, "template"),
        ({"template": "static"}, "template"),  # body unsigned
        ({"template": "{body:>10}"}, "template"),
        ({"template": "{body"}, "template"),
        ({"header": "X Signature"}, "header"),
        ({"timestamp_header": ""}, "timestamp_header"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"encoding": "base32"}, "encoding"),
        ({"tolerance_seconds": 0}, "tolerance_seconds"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(GenericHmacConfig, options)
    assert str(info.value).splitlines()[1].strip().startswith(f"{key}:")


def test_header_names_are_lower_cased() -> None:
    config = validate(GenericHmacConfig, {"header": "X-Sig", "timestamp_header": "X-TS"})
    assert (config.header, config.timestamp_header) == ("x-sig", "x-ts")
