"""Shopify ``X-Shopify-Hmac-Sha256``.

Shopify documents the construction, not a published vector:
https://shopify.dev/docs/apps/build/webhooks/verify-deliveries — HMAC-SHA256 of the raw
body keyed with the app's client secret, base64-encoded in ``X-Shopify-Hmac-SHA256``;
``X-Shopify-Webhook-Id`` identifies the delivery and ``X-Shopify-Topic`` its topic. The
expected header here is computed by following those words, with stdlib calls only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.verifiers import VerificationError
from gateway.verifiers.shopify import ShopifyConfig, ShopifyVerifier, sign
from tests.gateway.verifiers._helpers import make_request, secret_list
from webhook_common.errors import ConfigError

SECRET = "shpss_0123456789abcdef0123456789abcdef"
BODY = b'{"id":820982911946154508,"email":"jon@example.com"}'


def documented(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verifier(*secrets: str) -> ShopifyVerifier:
    return ShopifyVerifier(ShopifyConfig(), secret_list(*secrets))


def reason(v: ShopifyVerifier, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(make_request(headers, body))
    return info.value.reason


def test_documented_construction_verifies_with_id_and_topic() -> None:
    headers = {
        "X-Shopify-Hmac-Sha256": documented(SECRET, BODY),
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": "example.myshopify.com",
    }
    result = verifier(SECRET).verify(make_request(headers, BODY))
    assert result.secret_index == 0
    assert result.event_id == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert result.event_type == "orders/create"


def test_sign_matches_documented_construction() -> None:
    assert sign(BODY, SECRET, webhook_id="w-1", topic="orders/paid") == {
        "x-shopify-hmac-sha256": documented(SECRET, BODY),
        "x-shopify-webhook-id": "w-1",
        "x-shopify-topic": "orders/paid",
    }


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=40))
def test_generated_signatures_verify(body: bytes, secret: str) -> None:
    assert verifier(secret).verify(make_request(sign(body, secret), body)).secret_index == 0


def test_rotation_reports_which_secret_matched() -> None:
    # Shopify switches to a new client secret over up to an hour: list both meanwhile.
    v = verifier("shpss_old", "shpss_new")
    assert v.verify(make_request(sign(BODY, "shpss_old"), BODY)).secret_index == 0
    assert v.verify(make_request(sign(BODY, "shpss_new"), BODY)).secret_index == 1


@given(extra=st.binary(min_size=1, max_size=16))
def test_tampered_body_is_mismatch(extra: bytes) -> None:
    assert reason(verifier(SECRET), sign(BODY, SECRET), BODY + extra) == "mismatch"


@given(other=st.text(min_size=1, max_size=40))
def test_other_secret_is_mismatch(other: str) -> None:
    assume(other != SECRET)
    assert reason(verifier(other), sign(BODY, SECRET)) == "mismatch"


GOOD = documented(SECRET, BODY)  # contains both '+' and '/', see the URL-safe case


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "missing"),
        ("", "missing"),
        (GOOD.rstrip("="), "malformed"),  # padding removed
        (GOOD[:-4], "malformed"),  # too short
        (GOOD + "AAAA", "malformed"),  # too long
        (GOOD.replace("+", "-").replace("/", "_"), "malformed"),  # URL-safe alphabet
        (hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(), "malformed"),  # hex
        ("sha256=" + GOOD, "malformed"),
        (" " + GOOD, "malformed"),
        (base64.b64encode(b"\0" * 32).decode(), "mismatch"),
    ],
)
def test_header_format_errors(value: str | None, expected: str) -> None:
    headers = {} if value is None else {"x-shopify-hmac-sha256": value}
    assert reason(verifier(SECRET), headers) == expected


def test_no_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        verifier()
