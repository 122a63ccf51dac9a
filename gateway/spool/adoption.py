"""One journal per process under ``serve --workers``, and adoption of the journals no
process of this run owns.

Worker ``i`` of N (N > 1) journals in ``<path>/worker-<i>``; a single process uses
``<path>`` itself. So that nothing acknowledged is stranded when the number of workers
changes between runs, each process *adopts* its orphans (:func:`worker_dirs`): it copies
their undrained records into its own journal before serving, fsyncs, and only then marks
the orphan drained and removes it. A crash in between sends those records twice (the
consumers deduplicate by event id), never zero times."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from gateway.config import SpoolSettings
from gateway.spool.codec import encode
from gateway.spool.journal import Journal, Recovery, fsync_dir, list_segments

log = logging.getLogger("gateway.spool")

WORKER_DIR_PREFIX = "worker-"


def worker_dirs(root: Path, index: int, count: int) -> tuple[Path, list[Path]]:
    """The journal directory of worker ``index`` of ``count`` (``count`` 1: the single
    process, which uses ``root`` itself) and the orphan directories it adopts.

    Orphans are the journals of a run with another number of processes: ``root`` itself
    (a single-process run) goes to worker 0; ``root/worker-<j>`` with ``j >= count`` to
    worker ``j % count``. Every orphan has exactly one adopter, so two processes never
    open the same journal."""
    own = root if count == 1 else root / f"{WORKER_DIR_PREFIX}{index}"
    orphans: list[Path] = []
    if count > 1 and index == 0:
        orphans.append(root)
    try:
        children = sorted(root.iterdir())
    except OSError:  # no spool yet
        children = []
    for child in children:
        number = child.name.removeprefix(WORKER_DIR_PREFIX)
        if child.name.startswith(WORKER_DIR_PREFIX) and number.isdigit() and child.is_dir():
            j = int(number)
            if count == 1 or (j >= count and j % count == index):
                orphans.append(child)
    return own, orphans


def journal_dirs(root: Path) -> list[Path]:
    """``root`` and every worker journal directory under it, whatever the number of
    workers (for tools that read all journals, such as ``spool resend``)."""
    dirs = [root]
    if root.is_dir():
        dirs += sorted(
            p for p in root.iterdir() if p.is_dir() and p.name.startswith(WORKER_DIR_PREFIX)
        )
    return dirs


def adopt_journal(
    journal: Journal, recovery: Recovery, orphan: Path, batch: int, *, is_root: bool
) -> Recovery:
    """Move the undrained records of the journal in ``orphan`` behind those of
    ``journal`` (see the module docstring); the recovery figures including them.
    ``is_root``: ``orphan`` is the parent of the worker directories (kept, with its lock)."""
    if is_root and not list_segments(orphan):
        return recovery  # the parent of the worker dirs, never a journal itself
    other, found = Journal.open(orphan, journal.segment_bytes, journal.fsync)
    moved = nbytes = 0
    end = recovery.end
    try:
        pos = found.read
        while pos < found.end:
            entries, pos = other.read(pos, found.end, batch)
            if not entries:
                break
            _, end = journal.append_many([encode(e.record) for e in entries])
            moved += len(entries)
            nbytes += sum(e.size for e in entries)
        # Durable here before the orphan forgets them, whatever `gateway.spool.fsync` says.
        journal.sync()
        if found.records:
            other.checkpoint(found.end)
        for n in other.segments():
            other.path(n).unlink(missing_ok=True)
        for name in ("checkpoint", "checkpoint.tmp", *(() if is_root else ("lock",))):
            (orphan / name).unlink(missing_ok=True)
        fsync_dir(orphan)
    finally:
        other.close()
    if not is_root:
        with contextlib.suppress(OSError):
            orphan.rmdir()
    if moved:
        log.info(
            "spool: adopted %d undrained record(s) (%d bytes) from %s",
            moved,
            nbytes,
            orphan,
            extra={"spool_orphan": str(orphan)},
        )
    return Recovery(
        recovery.read,
        end,
        recovery.records + moved,
        recovery.bytes + nbytes,
        recovery.truncated_bytes + found.truncated_bytes,
        recovery.skipped_bytes + found.skipped_bytes,
    )


def open_and_adopt(
    directory: Path, settings: SpoolSettings, adopt: Sequence[Path]
) -> tuple[Journal, Recovery]:
    """:meth:`Journal.open` on ``directory``, then :func:`adopt_journal` each of ``adopt``."""
    journal, recovery = Journal.open(directory, settings.segment_bytes, settings.fsync)
    try:
        for orphan in adopt:
            recovery = adopt_journal(
                journal, recovery, orphan, settings.drain_batch, is_root=orphan == directory.parent
            )
    except BaseException:
        journal.close()
        raise
    return journal, recovery
