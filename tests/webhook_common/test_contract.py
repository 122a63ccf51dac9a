from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook_common.contract import (
    H_ID,
    H_ID_ORIGIN,
    H_SPECVERSION,
    EventMeta,
    IdOrigin,
    format_time,
    parse_time,
)
from webhook_common.errors import ContractError

META = EventMeta(
    id="abc",
    source="crystallize",
    type="order.created",
    time="2026-11-29T18:00:00.000001Z",
    subject="68e4fe1da9733a66efd88673",
    method="POST",
    query="concern=order&event=created",
    http_headers={"X-Crystallize-Signature": "tok"},
)


def test_headers_follow_cloudevents_binary_mode() -> None:
    headers = dict(META.to_headers())
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == b"abc"
    assert headers["ce_source"] == b"crystallize"
    assert headers["ce_type"] == b"order.created"
    assert headers["ce_time"] == b"2026-11-29T18:00:00.000001Z"
    assert headers["content-type"] == b"application/json"
    assert headers["http-header-x-crystallize-signature"] == b"tok"


def test_round_trip() -> None:
    back = EventMeta.from_headers(META.to_headers())
    assert back.id == META.id
    assert back.query == META.query
    assert dict(back.http_headers) == {"x-crystallize-signature": "tok"}


@given(
    st.text(min_size=1),
    st.text(min_size=1),
    st.text(min_size=1),
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), st.text()),
)
def test_round_trip_any_text(id_: str, source: str, type_: str, hdrs: dict[str, str]) -> None:
    meta = EventMeta(id=id_, source=source, type=type_, time=format_time(0), http_headers=hdrs)
    back = EventMeta.from_headers(meta.to_headers())
    assert (back.id, back.source, back.type, dict(back.http_headers)) == (id_, source, type_, hdrs)


def test_id_origin_and_provider_id_round_trip() -> None:
    meta = EventMeta(
        id="d" * 64,
        source="github",
        type="push",
        time=format_time(0),
        id_origin=IdOrigin.DIGEST,
        provider_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
    )
    headers = dict(meta.to_headers())
    assert headers["ce_idorigin"] == b"digest"
    assert headers["ce_providerid"] == b"72d3162e-cc78-11e3-81ab-4c9367dc0958"
    back = EventMeta.from_headers(meta.to_headers())
    assert (back.id_origin, back.provider_id) == (IdOrigin.DIGEST, meta.provider_id)
    assert "ce_providerid" not in dict(META.to_headers())


@pytest.mark.parametrize("value", [None, b"", b"from-a-newer-gateway"])
def test_an_absent_or_unknown_id_origin_reads_as_provider(value: bytes | None) -> None:
    headers = [h for h in META.to_headers() if h[0] != H_ID_ORIGIN]
    if value is not None:
        headers.append((H_ID_ORIGIN, value))
    assert EventMeta.from_headers(headers).id_origin is IdOrigin.PROVIDER


def test_missing_required_header_is_named() -> None:
    headers = [h for h in META.to_headers() if h[0] != H_ID]
    with pytest.raises(ContractError, match="ce_id"):
        EventMeta.from_headers(headers)


def test_wrong_specversion_rejected() -> None:
    headers = [(n, b"0.3" if n == H_SPECVERSION else v) for n, v in META.to_headers()]
    with pytest.raises(ContractError, match=r"expected '1\.0'"):
        EventMeta.from_headers(headers)


def test_non_utf8_header_rejected() -> None:
    with pytest.raises(ContractError, match="ce_type"):
        EventMeta.from_headers([*META.to_headers()[:3], ("ce_type", b"\xff")])


def test_time_format_and_parse() -> None:
    text = format_time(1_700_000_000.25)
    assert text == "2023-11-14T22:13:20.250000Z"
    assert parse_time(text) == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    with pytest.raises(ContractError):
        parse_time("yesterday")
    with pytest.raises(ContractError, match="no UTC offset"):
        parse_time("2023-11-14T22:13:20")


@given(
    st.one_of(
        st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False),
        # many timestamps within a few seconds: the per-second cache is hit and refreshed
        st.floats(min_value=1_700_000_000, max_value=1_700_000_003),
    )
)
def test_format_time_equals_datetime_isoformat(ts: float) -> None:
    # format_time caches the date-and-time part per second; the text must still be
    # exactly what datetime gives, rounding of microseconds (and carries) included.
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    assert format_time(ts) == expected
