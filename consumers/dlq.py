"""The dead-letter topic: records a sink will not take, with why.

A dead-letter record is the original record (same key, value byte for byte, and
headers) plus ``dlq_*`` headers; see ``docs/contract.md`` ("Dead-letter records").
One record per (record, sink): an event that fails in two sinks is dead-lettered
twice, so a replay can target each sink. Once the produce is acknowledged (acks=all,
idempotent producer) the record counts as done for that sink and its offset can be
committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consumers.record import SourceRecord
from webhook_common.contract import format_time
from webhook_common.errors import ContractError

H_REASON = "dlq_reason"
H_SINK = "dlq_sink"
H_ATTEMPTS = "dlq_attempts"
H_ERROR = "dlq_error"
H_TOPIC = "dlq_original_topic"
H_PARTITION = "dlq_original_partition"
H_OFFSET = "dlq_original_offset"
H_TIME = "dlq_time"
H_GROUP = "dlq_group"
DLQ_PREFIX = "dlq_"

# Why a record was dead-lettered (the `reason` label and header value).
REASON_CONTRACT = "contract"  # the record breaks the Kafka record contract
REASON_UNROUTED = "unrouted"  # no route matched and `unrouted: dead-letter`
REASON_PERMANENT = "permanent"  # the sink raised a non-retriable error
REASON_EXHAUSTED = "exhausted"  # retriable errors until retry.max_attempts
REASONS = (REASON_CONTRACT, REASON_UNROUTED, REASON_PERMANENT, REASON_EXHAUSTED)

_MAX_ERROR = 500


class Producer(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any
    ) -> Any: ...


def dead_letter_headers(
    record: SourceRecord,
    *,
    reason: str,
    sink: str,
    attempts: int,
    error: str,
    group: str,
    now: float,
) -> list[tuple[str, bytes]]:
    # Drop dlq_* headers of an earlier dead-lettering (a replayed record failing again)
    # so the record carries exactly one set.
    headers = [(k, v) for k, v in record.headers if not k.startswith(DLQ_PREFIX)]
    headers += [
        (H_REASON, reason.encode()),
        (H_SINK, sink.encode()),
        (H_ATTEMPTS, str(attempts).encode()),
        (H_ERROR, error[:_MAX_ERROR].encode("utf-8", "replace")),
        (H_TOPIC, record.topic.encode()),
        (H_PARTITION, str(record.partition).encode()),
        (H_OFFSET, str(record.offset).encode()),
        (H_TIME, format_time(now).encode()),
        (H_GROUP, group.encode()),
    ]
    return headers


class DeadLetterWriter:
    """Writes dead-letter records. ``redact`` blanks the process's secrets out of the
    error text, which quotes whatever a sink or its library said about the failure."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        group: str,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._group = group
        self._redact = redact

    async def send(
        self, record: SourceRecord, *, reason: str, sink: str, attempts: int, error: str, now: float
    ) -> None:
        """Produce and wait for the acknowledgement; raises what the producer raises."""
        headers = dead_letter_headers(
            record,
            reason=reason,
            sink=sink,
            attempts=attempts,
            error=self._redact(error),
            group=self._group,
            now=now,
        )
        await self._producer.send_and_wait(
            self.topic, value=record.value, key=record.key, headers=headers
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record read back: the original record and why it is here."""

    original: SourceRecord
    reason: str
    sink: str
    attempts: int
    error: str
    dlq_offset: int
    dlq_partition: int


def read_dead_letter(record: Any) -> DeadLetter:
    """Parse a record of the DLQ topic; raises ContractError when it has no dlq headers."""
    plain: list[tuple[str, bytes]] = []
    meta: dict[str, str] = {}
    for k, v in record.headers or ():
        if k.startswith(DLQ_PREFIX):
            meta[k] = (v or b"").decode("utf-8", "replace")
        else:
            plain.append((k, v or b""))
    try:
        original = SourceRecord(
            topic=meta[H_TOPIC],
            partition=int(meta[H_PARTITION]),
            offset=int(meta[H_OFFSET]),
            key=record.key,
            value=record.value,
            headers=tuple(plain),
        )
        return DeadLetter(
            original=original,
            reason=meta[H_REASON],
            sink=meta.get(H_SINK, ""),
            attempts=int(meta.get(H_ATTEMPTS) or 0),
            error=meta.get(H_ERROR, ""),
            dlq_offset=record.offset,
            dlq_partition=record.partition,
        )
    except (KeyError, ValueError) as exc:
        raise ContractError(
            f"dead-letter record {record.topic}/{record.partition}@{record.offset} lacks "
            f"valid dlq headers ({exc})"
        ) from None
