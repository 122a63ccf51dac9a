"""The shared building blocks every HMAC verifier relies on."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.verifiers import VerificationError
from gateway.verifiers._common import (
    MAX_SIGNATURES,
    TimestampedConfig,
    check_window,
    decode_digest,
    json_fields,
    match_secret,
    own_config,
    parse_unix_seconds,
    required_header,
    wire_bytes,
)
from gateway.verifiers.github import GitHubConfig
from webhook_common.errors import ConfigError


def reason_of(exc: pytest.ExceptionInfo[VerificationError]) -> str:
    return exc.value.reason


def digest(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@given(
    keys=st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=5, unique=True),
    data=st.data(),
)
def test_match_secret_returns_index_of_first_matching_key(
    keys: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(keys) - 1))
    decoys = data.draw(st.lists(st.binary(min_size=32, max_size=32), max_size=3))
    signatures = [*decoys, digest(keys[index], b"msg")]
    assert match_secret(keys, b"msg", signatures, what="h") == index


def test_match_secret_mismatch_and_limits() -> None:
    sig = digest(b"k", b"msg")
    with pytest.raises(VerificationError) as info:
        match_secret([b"other"], b"msg", [sig], what="h")
    assert reason_of(info) == "mismatch"
    with pytest.raises(VerificationError) as info:
        match_secret([b"k"], b"msg", [], what="h")
    assert reason_of(info) == "malformed"
    with pytest.raises(VerificationError) as info:
        match_secret([b"k"], b"msg", [sig] * (MAX_SIGNATURES + 1), what="h")
    assert reason_of(info) == "malformed"


def test_match_secret_sha512() -> None:
    sig = hmac.new(b"k", b"m", hashlib.sha512).digest()
    assert match_secret([b"x", b"k"], b"m", [sig], algorithm="sha512", what="h") == 1


@pytest.mark.parametrize(
    ("timestamp", "expected"), [(699, "expired"), (1301, "future"), (0, "expired")]
)
def test_check_window_rejects(timestamp: int, expected: str) -> None:
    with pytest.raises(VerificationError) as info:
        check_window(timestamp, now=1000, tolerance=300, what="t")
    assert reason_of(info) == expected


@pytest.mark.parametrize("timestamp", [700, 1000, 1300])
def test_check_window_accepts_inclusive_bounds(timestamp: int) -> None:
    check_window(timestamp, now=1000, tolerance=300, what="t")


@pytest.mark.parametrize("text", ["", "1.0", "+1", "-1", " 1", "1 ", "1e9", "\u0663", "1" * 13])
def test_parse_unix_seconds_rejects(text: str) -> None:
    with pytest.raises(VerificationError) as info:
        parse_unix_seconds(text, "t")
    assert reason_of(info) == "malformed"


def test_parse_unix_seconds_accepts_digits() -> None:
    assert parse_unix_seconds("01614265330", "t") == 1614265330
    assert parse_unix_seconds("1614265330", "t") == 1614265330


@given(raw=st.binary(min_size=32, max_size=32))
def test_decode_digest_round_trips_both_encodings(raw: bytes) -> None:
    assert decode_digest(raw.hex(), encoding="hex", algorithm="sha256", what="h") == raw
    assert decode_digest(raw.hex().upper(), encoding="hex", algorithm="sha256", what="h") == raw
    b64 = base64.b64encode(raw).decode()
    assert decode_digest(b64, encoding="base64", algorithm="sha256", what="h") == raw


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("ab cd" + "00" * 30, "hex"),  # bytes.fromhex would skip the space
        ("0" * 63, "hex"),
        ("0" * 128, "hex"),  # a sha512 length under sha256
        ("", "hex"),
        ("", "base64"),
        ("AAAA\n" * 11, "base64"),
        (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "base64"),
    ],
)
def test_decode_digest_is_strict(text: str, encoding: str) -> None:
    with pytest.raises(VerificationError) as info:
        decode_digest(text, encoding=encoding, algorithm="sha256", what="h")  # type: ignore[arg-type]
    assert reason_of(info) == "malformed"


def test_required_header() -> None:
    assert required_header({"a": "1"}, "a") == "1"
    for headers in ({}, {"a": ""}):
        with pytest.raises(VerificationError) as info:
            required_header(headers, "a")
        assert reason_of(info) == "missing"


def test_wire_bytes_recovers_latin1_decoded_header_bytes() -> None:
    # What an ASGI server hands over for the UTF-8 bytes of "é".
    assert wire_bytes("é".encode().decode("latin-1"), "h") == "é".encode()
    assert wire_bytes("€", "h") == "€".encode()
    with pytest.raises(VerificationError):
        wire_bytes("\ud800", "h")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": "evt_1", "type": "a.b"}', ("evt_1", "a.b")),
        (b'{"id": 1, "type": ""}', (None, None)),
        (b"[]", (None, None)),
        (b"{", (None, None)),
        (b"\xff", (None, None)),
        (b"[" * 5000 + b"]" * 5000, (None, None)),
    ],
)
def test_json_fields_never_raise(body: bytes, expected: tuple[str | None, ...]) -> None:
    assert json_fields(body, "id", "type") == expected


def test_own_config_narrows_or_refuses() -> None:
    config = TimestampedConfig()
    assert own_config(config, TimestampedConfig) is config
    with pytest.raises(ConfigError, match="expected TimestampedConfig"):
        own_config(GitHubConfig(), TimestampedConfig)
