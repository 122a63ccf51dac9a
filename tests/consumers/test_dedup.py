from __future__ import annotations

from consumers.config import DedupConfig
from consumers.dedup import MemoryDedupStore
from webhook_common.contract import IdOrigin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_mark_is_per_event_and_sink() -> None:
    store = MemoryDedupStore(60, 10)
    assert not await store.seen("e1", "a")
    await store.mark("e1", "a")
    assert await store.seen("e1", "a")
    assert not await store.seen("e1", "b")
    assert not await store.seen("e2", "a")


async def test_marks_expire_after_ttl() -> None:
    clock = Clock()
    store = MemoryDedupStore(60, 10, clock=clock)
    await store.mark("e1", "a")
    clock.now += 59.9
    assert await store.seen("e1", "a")
    clock.now += 0.2
    assert not await store.seen("e1", "a")
    assert len(store) == 0


async def test_a_mark_may_carry_its_own_window() -> None:
    clock = Clock()
    store = MemoryDedupStore(60, 10, clock=clock)
    await store.mark("derived", "a", 5)
    await store.mark("provider", "a")
    clock.now += 5.1
    assert not await store.seen("derived", "a")
    assert await store.seen("provider", "a")


def test_windows_by_id_origin_and_source() -> None:
    config = DedupConfig(
        ttl_seconds=1000,
        derived_ttl_seconds=10,
        sources={"crystallize": {"derived_ttl_seconds": 30}, "github": {"ttl_seconds": 99}},
    )
    assert config.ttl_for("any", IdOrigin.PROVIDER) == 1000
    assert config.ttl_for("any", IdOrigin.DIGEST) == 1000
    assert config.ttl_for("any", IdOrigin.DERIVED) == 10
    assert config.ttl_for("crystallize", IdOrigin.DERIVED) == 30
    assert config.ttl_for("crystallize", IdOrigin.PROVIDER) == 1000
    assert config.ttl_for("github", IdOrigin.DIGEST) == 99
    assert config.ttl_for("github", IdOrigin.DERIVED) == 10
    # Shipped: a derived id's window covers retries of one delivery, not a week.
    assert DedupConfig().ttl_for("crystallize", IdOrigin.DERIVED) == 300


async def test_bounded_the_earliest_expiring_marks_go_first() -> None:
    clock = Clock()
    store = MemoryDedupStore(60, 3, clock=clock)
    for i in range(3):
        await store.mark(f"e{i}", "a")
        clock.now += 1
    await store.mark("long", "a", 600)  # over the bound: e0 expires first, so it goes
    assert len(store) == 3
    assert not await store.seen("e0", "a")
    assert await store.seen("e1", "a")
    await store.mark("short", "a", 5)  # the shortest window now goes first: itself
    assert len(store) == 3
    assert not await store.seen("short", "a")
    assert [await store.seen(i, "a") for i in ("e1", "e2", "long")] == [True, True, True]


async def test_a_mark_renewed_keeps_its_new_window_when_the_old_one_is_swept() -> None:
    clock = Clock()
    store = MemoryDedupStore(60, 100, clock=clock)
    await store.mark("e", "a")
    clock.now += 30
    await store.mark("e", "a")  # a replay marks again: 60 s from now
    clock.now += 31  # past the first window: its bucket is swept at the next mark
    await store.mark("other", "a")
    assert await store.seen("e", "a")
    assert len(store) == 2
    clock.now += 30
    await store.mark("later", "a")
    assert not await store.seen("e", "a")


async def test_windows_are_kept_to_a_256th_of_their_length() -> None:
    clock = Clock()
    store = MemoryDedupStore(60, 10, clock=clock)
    await store.mark("week", "a", 604_800)
    clock.now += 604_800 - 1
    assert await store.seen("week", "a")
    clock.now += 604_800 // 256 + 1
    assert not await store.seen("week", "a")


async def test_the_store_keeps_a_digest_never_the_id() -> None:
    long = MemoryDedupStore(60, 10)
    await long.mark("x" * 10_000, "a")
    assert await long.seen("x" * 10_000, "a")
    assert not await long.seen("x" * 9_999, "a")
    assert [type(k) for k in long._expiry] == [int]
    assert max(k.bit_length() for k in long._expiry) <= 128


def test_only_openssl_reasons_count_as_a_refused_tls_handshake() -> None:
    import ssl

    from consumers.dedup import _tls_refusal

    assert _tls_refusal(OSError("[SSL: CERTIFICATE_VERIFY_FAILED] unable to get issuer")) == (
        "CERTIFICATE_VERIFY_FAILED"
    )
    assert _tls_refusal(OSError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")) == (
        "TLSV13_ALERT"
    )
    wrapped = ConnectionError("handshake")
    wrapped.__cause__ = ssl.SSLError(1, "refused")
    assert _tls_refusal(wrapped) is not None
    # An outage whose message merely mentions certificates is waited out, not a config error.
    assert _tls_refusal(ConnectionError("Error 111 connecting; see certificate docs")) is None
