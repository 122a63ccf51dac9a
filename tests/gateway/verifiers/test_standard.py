"""Standard Webhooks / Svix.

Vector: the reference libraries' own test (``test_sign_function``),
https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/python/tests/test_webhooks.py
(secret, id, timestamp, payload and expected ``v1,`` signature). Construction:
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
("Signature scheme", "Webhook headers"). The installed ``standardwebhooks`` package is
used as an independent implementation in both directions.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.verifiers import VerificationError
from gateway.verifiers.standard import (
    StandardWebhooksConfig,
    StandardWebhooksVerifier,
    decode_secret,
    sign,
)
from tests.gateway.verifiers._helpers import FixedClock, make_request, secret_list
from webhook_common.errors import ConfigError

VEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VEC_TS = 1614265330
VEC_BODY = b'{"test": 2432232314}'
VEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(b"another endpoint secret, 24+ bytes").decode()

ids_st = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="."),
    min_size=1,
    max_size=40,
)
keys_st = st.binary(min_size=1, max_size=64).map(lambda k: "whsec_" + base64.b64encode(k).decode())


def vec_headers(**override: str) -> dict[str, str]:
    headers = {
        "webhook-id": VEC_ID,
        "webhook-timestamp": str(VEC_TS),
        "webhook-signature": VEC_SIGNATURE,
    }
    headers.update({k.replace("_", "-"): v for k, v in override.items()})
    return headers


def verifier(*secrets: str, now: float = VEC_TS, tolerance: int = 300) -> StandardWebhooksVerifier:
    config = StandardWebhooksConfig(tolerance_seconds=tolerance)
    return StandardWebhooksVerifier(config, secret_list(*secrets), clock=FixedClock(now))


def reason(v: StandardWebhooksVerifier, headers: dict[str, str], body: bytes = VEC_BODY) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(make_request(headers, body))
    return info.value.reason


def test_reference_vector_verifies() -> None:
    result = verifier(VEC_SECRET).verify(make_request(vec_headers(), VEC_BODY))
    assert result.secret_index == 0
    assert result.event_id == VEC_ID
    assert result.event_type is None  # the vector's body has no "type"


def test_sign_reproduces_reference_vector() -> None:
    headers = sign(VEC_BODY, VEC_SECRET, msg_id=VEC_ID, timestamp=VEC_TS)
    assert headers == vec_headers()


def test_secret_without_prefix_is_accepted() -> None:
    # The reference libraries accept the base64 part alone too.
    v = verifier(VEC_SECRET.removeprefix("whsec_"))
    assert v.verify(make_request(vec_headers(), VEC_BODY)).secret_index == 0


def test_svix_header_names() -> None:
    headers = {k.replace("webhook-", "svix-"): v for k, v in vec_headers().items()}
    assert verifier(VEC_SECRET).verify(make_request(headers, VEC_BODY)).event_id == VEC_ID


def test_event_type_from_body() -> None:
    body = json.dumps({"type": "contact.created", "data": {"id": "1"}}).encode()
    headers = sign(body, VEC_SECRET, msg_id="msg_1", timestamp=VEC_TS)
    result = verifier(VEC_SECRET).verify(make_request(headers, body))
    assert (result.event_id, result.event_type) == ("msg_1", "contact.created")


@given(text=st.text(max_size=500), msg_id=ids_st, key=keys_st)
def test_reference_library_accepts_our_signatures(text: str, msg_id: str, key: str) -> None:
    now = int(time.time())
    headers = sign(text.encode(), key, msg_id=msg_id, timestamp=now)
    standardwebhooks.Webhook(key).verify(text, headers, json_parse=False)


@given(text=st.text(max_size=500), msg_id=ids_st, key=keys_st)
def test_we_accept_reference_library_signatures(text: str, msg_id: str, key: str) -> None:
    signature = standardwebhooks.Webhook(key).sign(
        msg_id=msg_id, timestamp=datetime.fromtimestamp(VEC_TS, tz=UTC), data=text
    )
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(VEC_TS),
        "webhook-signature": signature,
    }
    assert verifier(key).verify(make_request(headers, text.encode())).secret_index == 0


@given(body=st.binary(max_size=2048), msg_id=ids_st, key=keys_st)
def test_generated_signatures_over_any_bytes_verify(body: bytes, msg_id: str, key: str) -> None:
    # Not only UTF-8: the scheme signs raw bytes, and so do we.
    headers = sign(body, key, msg_id=msg_id, timestamp=VEC_TS)
    assert verifier(key).verify(make_request(headers, body)).event_id == msg_id


def test_several_signatures_any_may_match() -> None:
    # The sender's own rotation: old and new signatures, plus an asymmetric v1a entry
    # (from the spec's example) that an HMAC verifier skips.
    other = sign(VEC_BODY, OTHER_SECRET, msg_id=VEC_ID, timestamp=VEC_TS)["webhook-signature"]
    v1a = (
        "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/"
        "enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="
    )
    for signatures in ([other, VEC_SIGNATURE], [VEC_SIGNATURE, other], [v1a, VEC_SIGNATURE]):
        headers = vec_headers(webhook_signature=" ".join(signatures))
        assert verifier(VEC_SECRET).verify(make_request(headers, VEC_BODY))


def test_sign_with_several_secrets_emits_one_entry_each() -> None:
    headers = sign(VEC_BODY, [OTHER_SECRET, VEC_SECRET], msg_id=VEC_ID, timestamp=VEC_TS)
    assert headers["webhook-signature"].split(" ")[1] == VEC_SIGNATURE


def test_rotation_reports_which_secret_matched() -> None:
    v = verifier(OTHER_SECRET, VEC_SECRET)
    assert v.verify(make_request(vec_headers(), VEC_BODY)).secret_index == 1
    headers = sign(VEC_BODY, OTHER_SECRET, msg_id=VEC_ID, timestamp=VEC_TS)
    assert v.verify(make_request(headers, VEC_BODY)).secret_index == 0


@given(extra=st.binary(min_size=1, max_size=16))
def test_tampered_body_is_mismatch(extra: bytes) -> None:
    assert reason(verifier(VEC_SECRET), vec_headers(), VEC_BODY + extra) == "mismatch"


@given(msg_id=ids_st)
def test_tampered_id_is_mismatch(msg_id: str) -> None:
    assume(msg_id != VEC_ID)
    assert reason(verifier(VEC_SECRET), vec_headers(webhook_id=msg_id)) == "mismatch"


@given(shift=st.integers(min_value=-300, max_value=300).filter(bool))
def test_tampered_timestamp_within_window_is_mismatch(shift: int) -> None:
    headers = vec_headers(webhook_timestamp=str(VEC_TS + shift))
    assert reason(verifier(VEC_SECRET), headers) == "mismatch"


def test_other_secret_is_mismatch() -> None:
    assert reason(verifier(OTHER_SECRET), vec_headers()) == "mismatch"


@pytest.mark.parametrize(
    ("now", "expected"),
    [(VEC_TS + 301, "expired"), (VEC_TS + 10**6, "expired"), (VEC_TS - 301, "future")],
)
def test_replay_window(now: int, expected: str) -> None:
    assert reason(verifier(VEC_SECRET, now=now), vec_headers()) == expected


@pytest.mark.parametrize("now", [VEC_TS + 300, VEC_TS - 300])
def test_window_boundaries_are_inclusive(now: int) -> None:
    assert verifier(VEC_SECRET, now=now).verify(make_request(vec_headers(), VEC_BODY))


def test_forgery_outside_window_is_mismatch_not_expired() -> None:
    # The signature is checked first: a stale *forged* request is a forgery.
    assert reason(verifier(OTHER_SECRET, now=VEC_TS + 10**6), vec_headers()) == "mismatch"


B64_SIG = VEC_SIGNATURE.removeprefix("v1,")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"webhook-id": ""}, "missing"),
        ({"webhook-timestamp": ""}, "missing"),
        ({"webhook-signature": ""}, "missing"),
        ({"webhook-signature": B64_SIG}, "malformed"),  # no version
        ({"webhook-signature": "v1=" + B64_SIG}, "malformed"),  # Stripe-style separator
        ({"webhook-signature": "v2," + B64_SIG}, "malformed"),  # no v1 entry at all
        ({"webhook-signature": "v1," + B64_SIG[:-1]}, "malformed"),  # broken padding
        ({"webhook-signature": "v1," + B64_SIG[:-4]}, "malformed"),  # wrong length
        ({"webhook-signature": "v1,not base64!"}, "malformed"),
        ({"webhook-signature": " ".join([VEC_SIGNATURE] * 17)}, "malformed"),  # too many
        ({"webhook-timestamp": "1614265330.0"}, "malformed"),
        ({"webhook-timestamp": "2021-02-25T15:02:10Z"}, "malformed"),
        ({"webhook-timestamp": "-1614265330"}, "malformed"),
        ({"webhook-timestamp": "\uff11\uff16\uff11\uff14"}, "malformed"),  # fullwidth digits
        ({"webhook-id": "msg.with.dots"}, "malformed"),
    ],
)
def test_header_format_errors(override: dict[str, str], expected: str) -> None:
    headers = vec_headers()
    headers.update(override)
    headers = {k: v for k, v in headers.items() if v}
    assert reason(verifier(VEC_SECRET), headers) == expected


def test_families_are_not_mixed() -> None:
    headers = vec_headers()
    headers["svix-id"] = headers.pop("webhook-id")
    assert reason(verifier(VEC_SECRET), headers) == "missing"


def test_no_signature_header_at_all_is_missing() -> None:
    assert reason(verifier(VEC_SECRET), {"webhook-id": VEC_ID}) == "missing"


@pytest.mark.parametrize("bad", ["whsec_", "whsec_not*base64", "whsec_" + "é" * 8, ""])
def test_bad_secret_is_config_error_without_its_value(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        verifier(VEC_SECRET, bad)
    assert "secrets[1]" in str(info.value)
    if bad.removeprefix("whsec_"):
        assert bad.removeprefix("whsec_") not in str(info.value)


def test_no_secret_is_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one secret"):
        StandardWebhooksVerifier(StandardWebhooksConfig(), [])


def test_unpadded_secret_decodes() -> None:
    key = b"sixteen byte key!"
    unpadded = base64.b64encode(key).decode().rstrip("=")
    assert decode_secret("whsec_" + unpadded) == key
