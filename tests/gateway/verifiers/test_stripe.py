"""Stripe ``Stripe-Signature``.

Stripe publishes the construction, not a secret-and-signature pair:
https://docs.stripe.com/webhooks#verify-manually — split the header on ``,`` then ``=``,
take ``t`` and every ``v1``, compute the hex HMAC-SHA256 of ``{t}.{raw body}`` keyed with
the endpoint secret, compare in constant time, check ``t`` against a tolerance (the
libraries default to 300 s). The tests below build headers by following those steps
directly, not through :func:`gateway.verifiers.stripe.sign`.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.verifiers import VerificationError
from gateway.verifiers.stripe import StripeConfig, StripeVerifier, sign
from tests.gateway.verifiers._helpers import FixedClock, make_request, secret_list
from webhook_common.errors import ConfigError

SECRET = "whsec_test_5f3c1a2b9d8e7f6a"
NOW = 1_700_000_000
BODY = json.dumps({"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "type": "invoice.paid"}).encode()

# The shape of the example header in Stripe's docs (same page): a test-mode v0 after v1.
DOC_EXAMPLE_HEADER = (
    "t=1492774577,"
    "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,"
    "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
)


def documented_v1(secret: str, t: str, body: bytes) -> str:
    """Stripe's step 3: HMAC-SHA256, key = endpoint secret, message = ``t + '.' + body``."""
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def verifier(*secrets: str, now: float = NOW, tolerance: int = 300) -> StripeVerifier:
    config = StripeConfig(tolerance_seconds=tolerance)
    return StripeVerifier(config, secret_list(*secrets), clock=FixedClock(now))


def reason(v: StripeVerifier, header: str | None, body: bytes = BODY) -> str:
    headers = {} if header is None else {"Stripe-Signature": header}
    with pytest.raises(VerificationError) as info:
        v.verify(make_request(headers, body))
    return info.value.reason


def test_documented_construction_verifies_and_reads_id_and_type() -> None:
    header = f"t={NOW},v1={documented_v1(SECRET, str(NOW), BODY)}"
    result = verifier(SECRET).verify(make_request({"Stripe-Signature": header}, BODY))
    assert result.secret_index == 0
    assert result.event_id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert result.event_type == "invoice.paid"


def test_sign_matches_documented_construction() -> None:
    expected = f"t={NOW},v1={documented_v1(SECRET, str(NOW), BODY)}"
    assert sign(BODY, SECRET, timestamp=NOW) == {"stripe-signature": expected}


def test_documented_example_header_parses() -> None:
    # The docs' secret is not published, so the example can only fail as a mismatch; what
    # this pins is that its format (v0 element included) is understood, not `malformed`.
    assert reason(verifier(SECRET, now=1492774577), DOC_EXAMPLE_HEADER) == "mismatch"


def test_v0_and_unknown_elements_are_ignored() -> None:
    v1 = documented_v1(SECRET, str(NOW), BODY)
    header = f"t={NOW},v0={'0' * 64},v1={v1},scheme=future"
    assert verifier(SECRET).verify(make_request({"stripe-signature": header}, BODY))


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=40))
def test_generated_signatures_verify(body: bytes, secret: str) -> None:
    result = verifier(secret).verify(make_request(sign(body, secret, timestamp=NOW), body))
    assert result.secret_index == 0


def test_several_v1_during_stripe_secret_roll() -> None:
    # While Stripe rolls an endpoint secret it signs with both: either may be ours.
    header = sign(BODY, ["whsec_previous", SECRET], timestamp=NOW)["stripe-signature"]
    assert header.count("v1=") == 2
    assert verifier(SECRET).verify(make_request({"stripe-signature": header}, BODY))


def test_rotation_reports_which_secret_matched() -> None:
    v = verifier("whsec_old", "whsec_new")
    for index, secret in enumerate(["whsec_old", "whsec_new"]):
        headers = sign(BODY, secret, timestamp=NOW)
        assert v.verify(make_request(headers, BODY)).secret_index == index


@given(extra=st.binary(min_size=1, max_size=16))
def test_tampered_body_is_mismatch(extra: bytes) -> None:
    header = sign(BODY, SECRET, timestamp=NOW)["stripe-signature"]
    assert reason(verifier(SECRET), header, BODY + extra) == "mismatch"


@given(other=st.text(min_size=1, max_size=40))
def test_other_secret_is_mismatch(other: str) -> None:
    assume(other != SECRET)
    assert reason(verifier(other), sign(BODY, SECRET, timestamp=NOW)["stripe-signature"]) == (
        "mismatch"
    )


@given(shift=st.integers(min_value=-300, max_value=300).filter(bool))
def test_tampered_timestamp_within_window_is_mismatch(shift: int) -> None:
    header = sign(BODY, SECRET, timestamp=NOW)["stripe-signature"]
    forged = header.replace(f"t={NOW}", f"t={NOW + shift}")
    assert reason(verifier(SECRET), forged) == "mismatch"


@pytest.mark.parametrize(
    ("age", "expected"),
    [(301, "expired"), (86_400, "expired"), (-301, "future"), (-86_400, "future")],
)
def test_outside_tolerance(age: int, expected: str) -> None:
    headers = sign(BODY, SECRET, timestamp=NOW - age)
    assert reason(verifier(SECRET), headers["stripe-signature"]) == expected


@pytest.mark.parametrize("age", [300, 0, -300])
def test_tolerance_boundaries_are_inclusive(age: int) -> None:
    headers = sign(BODY, SECRET, timestamp=NOW - age)
    assert verifier(SECRET).verify(make_request(headers, BODY)).secret_index == 0


def test_tolerance_is_configurable() -> None:
    headers = sign(BODY, SECRET, timestamp=NOW - 900)
    assert verifier(SECRET, tolerance=1000).verify(make_request(headers, BODY))
    assert reason(verifier(SECRET, tolerance=600), headers["stripe-signature"]) == "expired"


V1 = "a" * 64


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "missing"),
        ("", "missing"),
        (f"v1={V1}", "malformed"),  # no t
        (f"t={NOW},t={NOW},v1={V1}", "malformed"),  # two t
        (f"t={NOW}", "malformed"),  # no v1
        (f"t={NOW},v0={V1}", "malformed"),  # only the test-mode scheme
        (f"t={NOW},v1", "malformed"),  # element without '='
        (f"t={NOW},v1={V1},", "malformed"),  # trailing empty element
        (f"t={NOW};v1={V1}", "malformed"),  # wrong separator
        (f"t={NOW},v1={'g' * 64}", "malformed"),  # not hex
        (f"t={NOW},v1={V1[:-2]}", "malformed"),  # too short
        (f"t=now,v1={V1}", "malformed"),
        (f"t={NOW}.5,v1={V1}", "malformed"),
        (f"t=-{NOW},v1={V1}", "malformed"),
        (f"t={'9' * 40},v1={V1}", "malformed"),
        (f"t={NOW},v1={V1}", "mismatch"),  # well-formed, wrong signature
    ],
)
def test_header_format_errors(header: str | None, expected: str) -> None:
    assert reason(verifier(SECRET), header) == expected


def test_body_without_id_or_type_still_verifies() -> None:
    for body in (b"not json", b"[1, 2]", b'{"id": 7, "type": null}', b"\xff\xfe"):
        result = verifier(SECRET).verify(make_request(sign(body, SECRET, timestamp=NOW), body))
        assert (result.event_id, result.event_type) == (None, None)


def test_no_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one secret"):
        StripeVerifier(StripeConfig(), [])
