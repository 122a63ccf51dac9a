"""Deduplication marks: "event ``id`` was delivered to sink ``name``".

The engine asks :meth:`DedupStore.seen` before a delivery and calls
:meth:`DedupStore.mark` only after the sink succeeded, so a crash between the two
re-delivers (at least once) and never drops. Two stores:

* ``memory`` — per process, bounded (earliest-expiring first out), each mark with its
  window. Right for one consumer process; marks vanish on restart.
* ``redis`` — shared by the group and restarts. Marks are ``SET key 1 NX EX ttl``;
  checks are one ``MGET`` (split by slot on a Redis Cluster). Concurrent callers are
  gathered into one pipeline per round trip (:class:`~consumers.batching.Batcher`),
  never one round trip per event. One server, a cluster or Sentinel: :mod:`consumers.redisconn`.

When Redis fails the store raises :class:`DedupUnavailable` (retriable): the engine
backs off and tries again instead of delivering unchecked, so an outage of Redis
stalls delivery (fetching pauses at the in-flight bound) rather than duplicating.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import SecretStr

from consumers.batching import Batcher
from consumers.config import DedupConfig
from webhook_common.errors import ConfigError, WebhookGatewayError

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (event id, sink name)
T = TypeVar("T")
R = TypeVar("R")


class DedupUnavailable(WebhookGatewayError):
    """The dedup store could not answer; try again later."""

    retriable = True


class DedupStore(Protocol):
    async def seen(self, event_id: str, sink: str) -> bool: ...

    async def mark(self, event_id: str, sink: str, ttl_seconds: int | None = None) -> None:
        """Remember the pair for ``ttl_seconds`` (None: the store's default)."""
        ...

    async def start(self) -> None:
        """Check the store can be used; :class:`ConfigError` when it never will be."""
        ...

    async def aclose(self) -> None: ...


class MemoryDedupStore:
    """Marks of one consumer process, bounded, each with its own window.

    A mark is a 128-bit digest of (sink, event id) mapped to the second it expires, so
    a remembered id costs about 100 bytes whatever the id's length (``make bench``
    measures it) and the process never holds the ids themselves. Expiry seconds are
    rounded up to 1/256 of the window (at least a second), so marks of a window share
    few expiry values; each value keeps its digests in the order they were marked, and
    the earliest-expiring marks are the first out, when they expire or when
    ``max_entries`` is reached. A collision of two digests is as likely as 2^-128 per
    pair: for a billion marks, below 10^-20.
    """

    def __init__(
        self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._expiry: dict[int, int] = {}
        # expiry second -> (that int, shared by its marks; digests in marking order)
        self._buckets: dict[int, tuple[int, deque[int]]] = {}
        self._due: list[int] = []  # heap of the buckets' expiry seconds

    def __len__(self) -> int:
        return len(self._expiry)

    @staticmethod
    def _digest(event_id: str, sink: str) -> int:
        key = f"{sink}\x00{event_id}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")

    async def seen(self, event_id: str, sink: str) -> bool:
        digest = self._digest(event_id, sink)
        expires = self._expiry.get(digest)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._expiry[digest]
            return False
        return True

    async def mark(self, event_id: str, sink: str, ttl_seconds: int | None = None) -> None:
        now = self._clock()
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        step = max(1, int(ttl) // 256)
        second = -(-math.ceil(now + ttl) // step) * step
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = (second, deque())
            heapq.heappush(self._due, second)
        digest = self._digest(event_id, sink)
        self._expiry[digest] = bucket[0]
        bucket[1].append(digest)
        self._drop(now)

    def _drop(self, now: float) -> None:
        """Expired buckets out, then the earliest-expiring marks while over the bound.
        A digest marked again sits in two buckets; only the one it now points at counts."""
        expiry, due, buckets = self._expiry, self._due, self._buckets
        while due and (due[0] <= now or len(expiry) > self._max):
            second = due[0]
            digests = buckets[second][1]
            expired = second <= now
            while digests and (expired or len(expiry) > self._max):
                digest = digests.popleft()
                if expiry.get(digest) == second:
                    del expiry[digest]
            if digests:
                return
            heapq.heappop(due)
            del buckets[second]

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        self._expiry.clear()
        self._buckets.clear()
        self._due.clear()


class RedisDedupStore:
    """Marks in Redis, shared by every consumer of the group."""

    def __init__(
        self,
        client: Any,
        ttl_seconds: int,
        prefix: str,
        batch_size: int,
        *,
        cluster: bool = False,
        url_key: str = "consumers.dedup.redis_url",
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._close = close or client.aclose
        self._ttl = ttl_seconds
        self._prefix = prefix
        # A cluster refuses an MGET across slots: the read is split by slot and sent to
        # each slot's node in parallel (still one round trip of wall time per batch).
        self._cluster = cluster
        self._url_key = url_key
        self._checks: Batcher[Pair, bool] = Batcher(self._check_many, batch_size)
        self._marks: Batcher[tuple[str, str, int], None] = Batcher(self._mark_many, batch_size)
        # Round trips made, for tests and the batching metric.
        self.round_trips = 0

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int, prefix: str, batch_size: int) -> RedisDedupStore:
        """A standalone server (``redis://`` or ``rediss://``)."""
        config = DedupConfig(store="redis", redis_url=SecretStr(url))
        return cls.from_config(
            config, ttl_seconds=ttl_seconds, prefix=prefix, batch_size=batch_size
        )

    @classmethod
    def from_config(
        cls,
        config: DedupConfig,
        *,
        ttl_seconds: int | None = None,
        prefix: str | None = None,
        batch_size: int | None = None,
    ) -> RedisDedupStore:
        from consumers.redisconn import connect

        connection = connect(config)
        return cls(
            connection.client,
            config.ttl_seconds if ttl_seconds is None else ttl_seconds,
            config.key_prefix if prefix is None else prefix,
            config.batch_size if batch_size is None else batch_size,
            cluster=connection.cluster,
            close=connection.aclose,
        )

    async def start(self) -> None:
        """Ask Redis once, as the deliveries will: refused credentials or missing ACL
        permissions are a configuration error (naming the key, never the password),
        not an outage to retry for ever. An unreachable Redis is an outage: the
        deliveries wait for it."""
        import redis.exceptions

        probe = f"{self._prefix}probe"
        try:
            if self._cluster:
                await self._client.mget_nonatomic([probe])
            else:
                await self._client.mget([probe])
            await self._client.set(probe, b"1", nx=True, ex=1)
        except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            what = (
                "Redis refused the credentials"
                if isinstance(exc, redis.exceptions.AuthenticationError)
                else f"the Redis user may not run MGET and SET on keys under the key_prefix ({exc})"
            )
            raise ConfigError(
                f"{self._url_key}: {what}: expected a user and password Redis accepts, "
                f"with +mget +set +ping on ~{self._prefix}*"
            ) from None
        except (redis.exceptions.RedisError, OSError) as exc:
            if _tls_refusal(exc):
                raise ConfigError(
                    f"{self._url_key}: the TLS handshake failed ({_tls_refusal(exc)}): "
                    "expected a server certificate that consumers.dedup.redis_ca_file (or "
                    "the system's CA store) trusts for the URL's host, and "
                    "consumers.dedup.redis_cert_file / redis_key_file when the server asks "
                    "for a client certificate"
                ) from None
            log.warning(
                "redis dedup store not reachable at start (%s); deliveries wait for it",
                type(exc).__name__,
            )

    def key(self, event_id: str, sink: str) -> str:
        return f"{self._prefix}{sink}:{event_id}"

    async def seen(self, event_id: str, sink: str) -> bool:
        return await self._checks.submit((event_id, sink))

    async def mark(self, event_id: str, sink: str, ttl_seconds: int | None = None) -> None:
        await self._marks.submit(
            (event_id, sink, self._ttl if ttl_seconds is None else ttl_seconds)
        )

    async def _check_many(self, pairs: list[Pair]) -> list[bool]:
        import redis.exceptions

        self.round_trips += 1
        try:
            keys = [self.key(e, s) for e, s in pairs]
            if self._cluster:
                values = await self._client.mget_nonatomic(keys)
            else:
                values = await self._client.mget(keys)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise DedupUnavailable(f"redis dedup check failed: {type(exc).__name__}") from exc
        return [v is not None for v in values]

    async def _mark_many(self, marks: list[tuple[str, str, int]]) -> list[None]:
        import redis.exceptions

        self.round_trips += 1
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for e, s, ttl in marks:
                    pipe.set(self.key(e, s), b"1", nx=True, ex=ttl)
                await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise DedupUnavailable(f"redis dedup mark failed: {type(exc).__name__}") from exc
        return [None] * len(marks)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._close()


def _tls_refusal(exc: BaseException) -> str | None:
    """What TLS said, when ``exc`` (or what caused it) is a refused handshake."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return (
                getattr(seen, "verify_message", None)
                or getattr(seen, "reason", None)
                or type(seen).__name__
            )
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    # redis-py reports some handshake failures as text only: OpenSSL's own reason codes,
    # never a word that an unrelated error message could contain.
    for marker in ("CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT", "TLSV13_ALERT", "SSLV3_ALERT"):
        if marker in text:
            return marker
    return None


def build_store(config: DedupConfig) -> DedupStore:
    if config.store == "redis":
        return RedisDedupStore.from_config(config)
    return MemoryDedupStore(config.ttl_seconds, config.max_entries)


__all__ = [
    "DedupStore",
    "DedupUnavailable",
    "MemoryDedupStore",
    "RedisDedupStore",
    "build_store",
]
