"""The gateway's HS256 JWT verification against PyJWT's, on generated tokens.

``gateway.verifiers.jws`` replaced ``jwt.decode`` on the hot path; it must accept
exactly the tokens PyJWT accepts and refuse the others for the same reason (the
verifier's metric label). The only intended difference: header extensions ``crit``
and ``b64``, which the gateway refuses outright, are not generated here (see
``test_header_extensions_are_refused``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.verifiers import jws

KEY = b"jws-test-key-0123456789abcdef0123456789"
OTHER_KEY = b"another-key-0123456789abcdef0123456789"
REQUIRED = ["exp", "iss", "aud", "hmac"]
ISSUER, AUDIENCE, LEEWAY = "crystallize", "webhook", 30.0
# Both sides judge against this instant (PyJWT's clock is patched), so a second ticking
# over between the two calls cannot make them disagree.
# Ten years ahead, so tokens expired at NOW are still valid by the real clock.
NOW = int(time.time()) + 10 * 365 * 86400 + 0.5


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make(header: dict[str, Any], claims: Any, key: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def ours(token: str) -> str:
    try:
        parsed = jws.Token.parse(token)
        if not parsed.signed_with(KEY):
            return "mismatch"
        jws.verified_claims(
            parsed, required=REQUIRED, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY, now=NOW
        )
    except jws.TokenError as exc:
        return exc.reason
    return "ok"


def _decode(token: str) -> None:
    jwt.decode(
        token,
        KEY,
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        leeway=LEEWAY,
        options={"require": REQUIRED},
    )


def pyjwt(token: str) -> str:
    """The reason the verifier used to give when it called PyJWT."""
    try:
        with mock.patch("jwt.api_jwt.datetime", wraps=datetime) as clock:
            clock.now.return_value = datetime.fromtimestamp(NOW, UTC)
            _decode(token)
    except jwt.InvalidSignatureError:
        return "mismatch"
    except jwt.ExpiredSignatureError:
        return "expired"
    except jwt.ImmatureSignatureError:
        return "future"
    except (
        jwt.InvalidAudienceError,
        jwt.InvalidIssuerError,
        jwt.MissingRequiredClaimError,
        jwt.InvalidIssuedAtError,
        jwt.exceptions.InvalidSubjectError,
        jwt.exceptions.InvalidJTIError,
    ):
        return "claims"
    except (jwt.PyJWTError, ValueError, TypeError):
        return "malformed"
    return "ok"


def times(offset_from: float) -> st.SearchStrategy[Any]:
    near = st.floats(min_value=-120, max_value=120).map(lambda d: int(offset_from + d))
    return st.one_of(
        near,
        near.map(float),
        near.map(str),
        st.just(None),
        st.booleans(),
        st.text(max_size=3),
        st.lists(st.integers(), max_size=1),
    )


MISSING = object()


def claim(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), values)


CLAIMS = st.fixed_dictionaries(
    {
        "exp": claim(times(NOW)),
        "iat": claim(times(NOW)),
        "nbf": claim(times(NOW)),
        "iss": claim(st.sampled_from([ISSUER, "other", "", None, 1, ["crystallize"]])),
        "aud": claim(
            st.sampled_from(
                [AUDIENCE, "other", "", None, [AUDIENCE], ["x", AUDIENCE], ["x"], [], [1], 7]
            )
        ),
        "hmac": claim(st.sampled_from(["a" * 64, "", None, 0])),
        "sub": claim(st.sampled_from(["signature", 1, None])),
        "jti": claim(st.sampled_from(["id", 2, None])),
    }
).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})

HEADERS = st.fixed_dictionaries(
    {
        "alg": st.sampled_from(["HS256", "HS256", "HS256", "none", "HS512", "RS256", None]),
        "typ": st.sampled_from(["JWT", None]),
    },
    optional={"kid": st.sampled_from(["k1", 3, None])},
)


@settings(max_examples=400, deadline=None)
@given(
    header=HEADERS,
    claims=st.one_of(CLAIMS, st.sampled_from([[], "claims", 3, None])),
    key=st.sampled_from([KEY, KEY, OTHER_KEY]),
)
def test_same_verdict_as_pyjwt(header: dict[str, Any], claims: Any, key: bytes) -> None:
    token = make(header, claims, key)
    assert ours(token) == pyjwt(token), token


@settings(max_examples=300, deadline=None)
@given(
    claims=CLAIMS,
    position=st.integers(min_value=0, max_value=10_000),
    replacement=st.sampled_from(list("A_-=.!+/ a0")),
    action=st.sampled_from(["replace", "insert", "delete", "pad", "truncate"]),
)
def test_same_verdict_as_pyjwt_on_damaged_tokens(
    claims: dict[str, Any], position: int, replacement: str, action: str
) -> None:
    token = make({"alg": "HS256", "typ": "JWT"}, claims, KEY)
    i = position % (len(token) + 1)
    damaged = {
        "replace": token[:i] + replacement + token[i + 1 :],
        "insert": token[:i] + replacement + token[i:],
        "delete": token[:i] + token[i + 1 :],
        "pad": token.replace(".", "=.", 1 + position % 2),
        "truncate": token[:i],
    }[action]
    assert ours(damaged) == pyjwt(damaged), damaged


def test_a_valid_token_is_accepted_and_its_claims_returned() -> None:
    now = int(time.time())
    claims = {"exp": now + 60, "iat": now, "iss": ISSUER, "aud": AUDIENCE, "hmac": "ab"}
    parsed = jws.Token.parse(make({"alg": "HS256", "typ": "JWT"}, claims, KEY))
    assert parsed.signed_with(KEY)
    assert not parsed.signed_with(OTHER_KEY)
    assert (
        jws.verified_claims(
            parsed, required=REQUIRED, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY
        )
        == claims
    )


@pytest.mark.parametrize("extension", [{"crit": ["exp"]}, {"b64": False}, {"b64": True}])
def test_header_extensions_are_refused(extension: dict[str, Any]) -> None:
    claims = {"exp": int(NOW) + 60, "iss": ISSUER, "aud": AUDIENCE, "hmac": "ab"}
    token = make({"alg": "HS256", **extension}, claims, KEY)
    with pytest.raises(jws.TokenError) as caught:
        jws.Token.parse(token)
    assert caught.value.reason == "malformed"


def test_both_sides_judge_at_the_same_fixed_instant() -> None:
    # Expired at NOW, yet in the future by the real clock: both must
    # say "expired", or the comparisons above would not compare like with like.
    assert time.time() < NOW - 100
    claims = {"exp": int(NOW) - 100, "iss": ISSUER, "aud": AUDIENCE, "hmac": "ab"}
    token = make({"alg": "HS256"}, claims, KEY)
    assert ours(token) == pyjwt(token) == "expired"
