from __future__ import annotations

import hashlib

import pytest

from gateway import extract
from gateway.config import PROVIDER_DEFAULTS
from gateway.extract import KeyExtractor
from webhook_common.contract import IdOrigin

CRYSTALLIZE = PROVIDER_DEFAULTS["crystallize"]
crystallize_keys = KeyExtractor.build(
    CRYSTALLIZE.key_pointers, CRYSTALLIZE.key_entity_get_id, CRYSTALLIZE.key_query_param
)


@pytest.mark.parametrize(
    ("doc", "query", "expected"),
    [
        ({"order": {"get": {"id": "o1"}}}, {}, "o1"),
        ({"item": {"get": {"id": "i1"}}}, {}, "i1"),
        ({"customer": {"get": {"identifier": "c@x", "id": "ignored"}}}, {}, "c@x"),
        ({"orderId": "o2", "id": "other"}, {}, "o2"),
        ({"id": 42}, {}, "42"),
        ({"shape": {"get": {"id": "s1"}}}, {}, "s1"),  # any top-level <entity>/get/id
        ({"a": {"get": {}}, "topic": {"get": {"id": 7}}}, {}, "7"),
        (None, {"id": "from-query"}, "from-query"),  # GET webhook: empty body
        ({"unrelated": 1}, {"id": "q"}, "q"),
        ({"id": True}, {}, None),  # booleans, floats and objects are not ids
        ({"id": 1.5}, {}, None),
        ({"id": ""}, {"id": ""}, None),
        ([1, 2], {}, None),
    ],
)
def test_crystallize_entity_id(doc: object, query: dict[str, str], expected: str | None) -> None:
    assert crystallize_keys.entity_id(doc, query) == expected


def test_pointer_order_wins_over_document_order() -> None:
    doc = {"item": {"get": {"id": "item"}}, "order": {"get": {"id": "order"}}}
    assert crystallize_keys.entity_id(doc, {}) == "order"


def test_custom_rules_without_fallbacks() -> None:
    keys = KeyExtractor.build(["/data/0/ref"], False, None)
    assert keys.entity_id({"data": [{"ref": "r"}]}, {"id": "q"}) == "r"
    assert keys.entity_id({"order": {"get": {"id": "x"}}}, {"id": "q"}) is None


@pytest.mark.parametrize(
    ("provided", "query", "segment", "doc", "expected"),
    [
        ("push", {"concern": "order", "event": "created"}, "seg", {"order": 1}, "push"),
        (None, {"concern": "order", "event": "created"}, "seg", {"item": 1}, "order.created"),
        (None, {"event": "published"}, "seg", None, "published"),
        (None, {"concern": "item"}, None, None, "item"),
        (None, {}, "order.updated", {"order": 1}, "order.updated"),
        (None, {}, None, {"order": {"get": {}}}, "order"),
        (None, {}, None, None, "unknown"),
        (None, {}, None, [1], "unknown"),
    ],
)
def test_event_type_precedence(
    provided: str | None,
    query: dict[str, str],
    segment: str | None,
    doc: object,
    expected: str,
) -> None:
    assert extract.event_type(provided, query, segment, doc) == expected


def test_event_id_is_sha256_of_netstrings() -> None:
    expected = hashlib.sha256(b"11:crystallize,4:POST,3:a=1,2:{},").hexdigest()
    assert extract.event_id("crystallize", "POST", b"a=1", b"{}") == expected


def test_event_id_depends_on_every_field_and_boundaries() -> None:
    base = extract.event_id("s", "POST", b"q=1", b"{}")
    assert base == extract.event_id("s", "POST", b"q=1", b"{}")
    others = {
        extract.event_id("t", "POST", b"q=1", b"{}"),
        extract.event_id("s", "PUT", b"q=1", b"{}"),
        extract.event_id("s", "POST", b"q=2", b"{}"),
        extract.event_id("s", "POST", b"q=1", b"{ }"),
        # Moving bytes across a field boundary changes the id.
        extract.event_id("s", "POST", b"q=1{", b"}"),
    }
    assert base not in others
    assert len(others) == 5


def test_bounded_keeps_short_values_and_hashes_long_ones() -> None:
    from gateway.extract import MAX_ID_LENGTH, bounded

    short = "x" * MAX_ID_LENGTH
    assert bounded(short) == short
    long_a, long_b = "a" * 10_000, "a" * 9_999 + "b"
    assert bounded(long_a).startswith("sha256:")
    assert len(bounded(long_a)) == len("sha256:") + 64
    assert bounded(long_a) == bounded("a" * 10_000)
    assert bounded(long_a) != bounded(long_b)
    assert bounded("\ud800" * 300).startswith("sha256:")
    assert bounded("id-\ud800").startswith("sha256:")
    assert bounded("ordre-ø") == "ordre-ø"


IDENTITY_BODY = b'{"action":"opened"}'


@pytest.mark.parametrize(
    ("policy", "verified_id", "signed", "origin", "kept"),
    [
        ("auto", "msg_1", True, IdOrigin.PROVIDER, ""),
        ("auto", "d-1", False, IdOrigin.DIGEST, "d-1"),
        ("provider", "d-1", False, IdOrigin.PROVIDER, ""),
        ("digest", "msg_1", True, IdOrigin.DIGEST, "msg_1"),
        ("auto", None, False, IdOrigin.DERIVED, ""),
        ("digest", None, False, IdOrigin.DIGEST, ""),
    ],
)
def test_identity_by_policy(
    policy: str, verified_id: str | None, signed: bool, origin: IdOrigin, kept: str
) -> None:
    got_id, got_origin, got_kept = extract.identity(
        policy, "gh", verified_id, signed, "POST", b"", IDENTITY_BODY
    )
    assert (got_origin, got_kept) == (origin, kept)
    if origin is IdOrigin.PROVIDER:
        assert got_id == verified_id
    elif verified_id is not None:
        assert got_id == extract.digest_id("gh", IDENTITY_BODY)
    else:
        assert got_id == extract.event_id("gh", "POST", b"", IDENTITY_BODY)


def test_a_replay_with_a_fresh_unsigned_id_or_query_has_the_same_digest() -> None:
    """What a body-only signature covers decides the id: a captured delivery resent
    with a new delivery header, another method or query is still the same event."""
    first = extract.identity("auto", "gh", "id-1", False, "POST", b"", IDENTITY_BODY)
    replay = extract.identity("auto", "gh", "id-2", False, "PUT", b"x=1", IDENTITY_BODY)
    assert first[0] == replay[0]
    assert (first[2], replay[2]) == ("id-1", "id-2")
    assert extract.digest_id("gh", IDENTITY_BODY) != extract.digest_id("other", IDENTITY_BODY)
    assert extract.digest_id("gh", b"") != extract.event_id("gh", "POST", b"", b"")
