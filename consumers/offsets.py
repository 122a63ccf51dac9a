"""Which offset of a partition is safe to commit.

Records of one partition finish out of order (different keys run in parallel), so the
committed offset may only advance to the lowest offset that is not finished yet: a
crash then re-reads every unfinished record, and dedup hides the ones that had been
delivered. Offsets within an assignment arrive in increasing order, possibly with gaps
(compaction, transaction markers), so a FIFO of pending offsets is enough.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Pending and finished offsets of one partition, in fetch order."""

    __slots__ = ("_done", "_last", "_pending", "_stamps", "committed")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        # The Kafka timestamp (ms; -1 unknown) of each pending offset, for the lag in time.
        self._stamps: deque[int] = deque()
        self._done: set[int] = set()
        self._last: int | None = None
        # The last offset committed to Kafka (the next offset to read), if any.
        self.committed: int | None = None

    def add(self, offset: int, timestamp_ms: int = -1) -> None:
        """A record was fetched and handed to processing."""
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} fetched after {self._last}: out of order")
        self._pending.append(offset)
        self._stamps.append(timestamp_ms)
        self._last = offset

    def finish(self, offset: int) -> None:
        """A record is done (delivered, deduplicated, dropped or dead-lettered)."""
        if not self._pending or not self._pending[0] <= offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} is not pending")
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(self._pending.popleft())
            self._stamps.popleft()

    @property
    def in_flight(self) -> int:
        """Records fetched and not finished."""
        return len(self._pending) - len(self._done)

    def oldest_timestamp_ms(self) -> int | None:
        """The Kafka timestamp of the lowest unfinished record; None when none is
        unfinished or its timestamp is unknown."""
        if not self._stamps or self._stamps[0] < 0:
            return None
        return self._stamps[0]

    def commit_point(self) -> int | None:
        """The offset to commit (the next one a restarted consumer reads), or None when
        nothing was fetched yet."""
        if self._pending:
            return self._pending[0]
        return None if self._last is None else self._last + 1

    def to_commit(self) -> int | None:
        """:meth:`commit_point` when it is ahead of what was committed, else None."""
        point = self.commit_point()
        if point is None or (self.committed is not None and point <= self.committed):
            return None
        return point
