"""The optional durable spool (``gateway.spool``, off by default).

When Kafka does not acknowledge a verified record in time (or refuses it with a
retriable error), the record is appended to a local append-only journal, fsynced, and
only then answered 202. A background drainer hands journaled records to the producer in
the order they were accepted and, once Kafka acknowledged them, advances a durable read
position (the ``checkpoint`` file) and deletes fully drained segment files.

- :mod:`~gateway.spool.codec`: the frame of one record;
- :mod:`~gateway.spool.journal`: segment files, checkpoint, lock and crash recovery;
- :mod:`~gateway.spool.adoption`: one journal per worker process, orphans adopted;
- :mod:`~gateway.spool.facade`: :class:`Spool`, the committer and drainer on the loop.
"""

from gateway.spool.adoption import worker_dirs
from gateway.spool.facade import (
    STOP_DRAIN_SECONDS,
    Enqueue,
    Spool,
    SpoolFull,
    SpoolWriteError,
    enqueue_via_send,
)
from gateway.spool.journal import Journal, SpoolOpenError, list_segments

__all__ = [
    "STOP_DRAIN_SECONDS",
    "Enqueue",
    "Journal",
    "Spool",
    "SpoolFull",
    "SpoolOpenError",
    "SpoolWriteError",
    "enqueue_via_send",
    "list_segments",
    "worker_dirs",
]
