"""The journal's frame: ``>II`` (payload length, CRC-32 of the payload), then the
payload: ``u16`` topic length + topic, ``u32`` key length + key, ``u32`` value length +
value, ``u16`` header count, and per header ``u16`` name length + name, ``u32`` value
length + value (big-endian, UTF-8 names)."""

from __future__ import annotations

import struct
import zlib

from gateway.producer import Record

FRAME = struct.Struct(">II")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def encode(record: Record) -> bytes:
    """One frame: length, CRC-32, payload."""
    topic = record.topic.encode()
    parts = [_U16.pack(len(topic)), topic, _U32.pack(len(record.key)), record.key]
    parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
    for name, value in record.headers:
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _U32.pack(len(value)), value]
    payload = b"".join(parts)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("payload ends inside a field")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value


def decode(payload: bytes) -> Record:
    """The record of a frame's payload; ``ValueError`` when it is malformed."""
    r = _Reader(payload)
    topic = r.take(r.u16()).decode()
    key = r.take(r.u32())
    value = r.take(r.u32())
    headers = []
    for _ in range(r.u16()):
        name = r.take(r.u16()).decode()
        headers.append((name, r.take(r.u32())))
    if r.at != len(payload):
        raise ValueError("bytes after the last header")
    return Record(topic, key, value, headers)
