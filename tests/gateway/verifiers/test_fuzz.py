"""Every registered verifier fails closed on arbitrary input.

Loads each entry point of the group ``webhook_gateway.verifiers`` through
:mod:`importlib.metadata` (built-ins and any installed plugin alike), builds it with a
valid config and secrets, and feeds it hypothesis-generated headers and bodies: known
header names with arbitrary or nearly-valid values, random names, valid signed requests
with one header rewritten. Only :class:`VerificationError` with a documented reason may
come out (``none`` accepts everything); any other exception is a 500 in production.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from gateway.verifiers import (
    ENTRY_POINT_GROUP,
    VerificationError,
    Verified,
    Verifier,
    generic,
    github,
    shopify,
    standard,
    stripe,
)
from gateway.verifiers.none import NoVerifier
from tests.gateway.verifiers._helpers import make_request

REASONS = {"missing", "malformed", "mismatch", "expired", "future", "claims"}
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PLAIN_SECRET = "fuzz-secret"
GENERIC_OPTIONS = {
    "header": "x-signature",
    "prefix": "sha256=",
    "timestamp_header": "x-timestamp",
    "id_header": "x-id",
    "type_header": "x-type",
}

# A valid config and secrets per built-in; anything else (a plugin) is tried with its
# Config defaults and one plain secret.
OPTIONS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "standard-webhooks": ({}, [STANDARD_SECRET]),
    "generic-hmac": (GENERIC_OPTIONS, [PLAIN_SECRET]),
    "none": ({"insecure": True}, []),
}

# Signers for the built-ins, so some inputs start valid and get one header rewritten.
SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "standard-webhooks": lambda b: standard.sign(b, STANDARD_SECRET, msg_id="msg_1"),
    "stripe": lambda b: stripe.sign(b, PLAIN_SECRET),
    "github": lambda b: github.sign(b, PLAIN_SECRET, delivery="d", event="e"),
    "shopify": lambda b: shopify.sign(b, PLAIN_SECRET, webhook_id="w", topic="t"),
    "generic-hmac": lambda b: generic.sign(
        b, PLAIN_SECRET, generic.GenericHmacConfig.model_validate(GENERIC_OPTIONS)
    ),
}

# Typed as the Protocol: mypy checks each class conforms statically, the test below that
# the entry points in pyproject.toml resolve to them.
BUILT_INS: dict[str, type[Verifier]] = {
    "standard-webhooks": standard.StandardWebhooksVerifier,
    "stripe": stripe.StripeVerifier,
    "github": github.GitHubVerifier,
    "shopify": shopify.ShopifyVerifier,
    "generic-hmac": generic.GenericHmacVerifier,
    "none": NoVerifier,
}

KNOWN_HEADERS = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "stripe-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-delivery",
    "x-github-event",
    "x-shopify-hmac-sha256",
    "x-shopify-webhook-id",
    "x-shopify-topic",
    "x-crystallize-signature",
    "x-signature",
    "x-timestamp",
    "x-id",
    "x-type",
    "authorization",
    "content-type",
]


def _registered() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Characters that break naive parsing and encoding, drawn often; plus any code point,
# surrogates and astral ones included (ASGI gives latin-1, a verifier must not rely on it).
NASTY = [
    "\ud800",
    "\udfff",
    "\x00",
    "\xff",
    "é",
    "€",
    "\U0001d7d8",
    "\u0661",
    "\n",
    " ",
    ",",
    "=",
    ".",
    "-",
]
any_text = st.text(st.sampled_from(NASTY) | st.characters(exclude_categories=()), max_size=80)
nasty_text = st.text(st.sampled_from([*NASTY, "a", "0"]), min_size=1, max_size=12)
latin1_text = st.text(st.characters(max_codepoint=0xFF), max_size=80)
digits = st.integers(-(10**14), 10**14).map(str) | st.just(str(int(time.time())))
hex_text = st.binary(max_size=72).map(bytes.hex)
b64_text = st.binary(max_size=72).map(lambda b: base64.b64encode(b).decode())
json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
).map(json.dumps)
jwt_like = st.tuples(
    st.one_of(json_text, st.just('{"alg":"HS256","typ":"JWT"}'), st.just('{"alg":"none"}')),
    json_text,
    st.binary(max_size=40),
).map(lambda p: f"{_b64url(p[0].encode())}.{_b64url(p[1].encode())}.{_b64url(p[2])}")
near_valid = st.one_of(
    st.builds(lambda s: "sha256=" + s, hex_text | any_text),
    st.builds(lambda t, s: f"t={t},v1={s}", digits, hex_text | any_text),
    st.lists(
        st.builds(lambda v, s: f"{v},{s}", st.sampled_from(["v1", "v1a", "v2"]), b64_text)
    ).map(" ".join),
    jwt_like,
    hex_text,
    b64_text,
    digits,
)
header_value = st.one_of(nasty_text, any_text, latin1_text, near_valid)
headers_st = st.dictionaries(
    st.sampled_from(KNOWN_HEADERS) | st.text(max_size=20), header_value, max_size=8
)
body_st = st.one_of(st.binary(max_size=512), json_text.map(str.encode))


@functools.cache
def build(ep: EntryPoint) -> Verifier:
    cls = ep.load()
    options, secrets = OPTIONS.get(ep.name, ({}, [PLAIN_SECRET]))
    verifier: Verifier = cls(cls.Config.model_validate(options), [SecretStr(s) for s in secrets])
    return verifier


def check(name: str, verifier: Verifier, headers: dict[str, str], body: bytes) -> None:
    request = make_request(headers, body)
    if name == "none":
        assert isinstance(verifier.verify(request), Verified)
        return
    try:
        result = verifier.verify(request)
    except VerificationError as exc:
        reason = exc.reason
    else:
        assert isinstance(result, Verified)
        return
    assert reason in REASONS


def test_every_built_in_is_registered() -> None:
    registered = {ep.name: ep for ep in _registered()}
    assert set(registered) >= {*BUILT_INS, "crystallize"}
    for name, cls in BUILT_INS.items():
        assert registered[name].load() is cls


@pytest.mark.parametrize("ep", _registered(), ids=lambda ep: ep.name)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(headers=headers_st, body=body_st)
def test_arbitrary_headers_and_bodies(ep: EntryPoint, headers: dict[str, str], body: bytes) -> None:
    check(ep.name, build(ep), headers, body)


@pytest.mark.parametrize("name", sorted(SIGNERS))
@settings(max_examples=300)
@given(data=st.data(), body=body_st, value=header_value)
def test_valid_request_with_one_header_rewritten(
    name: str, data: st.DataObject, body: bytes, value: str
) -> None:
    [ep] = [ep for ep in _registered() if ep.name == name]
    verifier = build(ep)
    headers = SIGNERS[name](body)
    assert isinstance(verifier.verify(make_request(headers, body)), Verified)
    target = data.draw(st.sampled_from(sorted(headers)))
    headers[target] = value
    check(name, verifier, headers, body)
