"""The dead-letter topic: records a sink will not take, with why.

A dead-letter record is the original record (same key, value byte for byte, and
headers) plus ``dlq_*`` headers; see ``docs/contract.md`` ("Dead-letter records").
One record per (record, sink): an event that fails in two sinks is dead-lettered
twice, so a replay can target each sink. Once the produce is acknowledged (acks=all,
idempotent producer) the record counts as done for that sink and its offset can be
committed.

A dead letter the broker or the producer refuses as too large (over the topic's
``max.message.bytes`` or ``consumers.max_record_bytes``) is written instead as a small
reference to the original record, reason ``too_large``: waiting would not make it fit,
and the original stays readable in its topic for ``replay --offsets``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka.errors import MessageSizeTooLargeError

from consumers.record import SourceRecord
from webhook_common.contract import H_ID, format_time
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
# The dead letter was too large for the DLQ: a reference to the original was written.
REASON_TOO_LARGE = "too_large"
REASONS = (
    REASON_CONTRACT,
    REASON_UNROUTED,
    REASON_PERMANENT,
    REASON_EXHAUSTED,
    REASON_TOO_LARGE,
)

_MAX_ERROR = 500


class Producer(Protocol):
    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
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


def event_id(record: SourceRecord) -> str | None:
    """The record's ``ce_id``, if it has one (a record breaking the contract may not)."""
    for name, value in record.headers:
        if name == H_ID:
            return value.decode("utf-8", "replace")
    return None


def reference_value(record: SourceRecord, *, reason: str) -> bytes:
    """The value of a ``too_large`` dead letter: where the original is, and why it was
    dead-lettered."""
    return orjson.dumps(
        {
            "reason": REASON_TOO_LARGE,
            "original_reason": reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "event_id": event_id(record),
            "value_bytes": len(record.value or b""),
        }
    )


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
    ) -> str:
        """Produce and wait for the acknowledgement; returns the reason written
        (``reason``, or ``too_large`` for a reference) and raises what the producer
        raises otherwise."""
        redacted = self._redact(error)
        headers = dead_letter_headers(
            record,
            reason=reason,
            sink=sink,
            attempts=attempts,
            error=redacted,
            group=self._group,
            now=now,
        )
        try:
            await self._producer.send_and_wait(
                self.topic, value=record.value, key=record.key, headers=headers
            )
        except MessageSizeTooLargeError:
            pass
        else:
            return reason
        # Without the original headers: the reference is not an event, and nothing must
        # read it as one (the headers may be what made the record too large, too).
        bare = SourceRecord(record.topic, record.partition, record.offset, record.key, b"", ())
        headers = dead_letter_headers(
            bare,
            reason=REASON_TOO_LARGE,
            sink=sink,
            attempts=attempts,
            error=redacted,
            group=self._group,
            now=now,
        )
        await self._producer.send_and_wait(
            self.topic,
            value=reference_value(record, reason=reason),
            key=record.key,
            headers=headers,
        )
        return REASON_TOO_LARGE


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
