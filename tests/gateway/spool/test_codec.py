"""The journal frame of one record."""

from __future__ import annotations

import struct
import zlib

import pytest

from gateway.producer import Record
from gateway.spool.codec import FRAME, decode, encode


def test_frame_is_length_crc_payload_and_round_trips() -> None:
    record = Record("t.x", b"\x00key", b"\xff\xfebody", [("ce_id", b"1"), ("h", b"")])
    frame = encode(record)
    length, crc = FRAME.unpack(frame[: FRAME.size])
    payload = frame[FRAME.size :]
    assert length == len(payload)
    assert crc == zlib.crc32(payload)
    assert payload[:5] == struct.pack(">H", 3) + b"t.x"
    assert decode(payload) == record
    with pytest.raises(ValueError, match="inside a field"):
        decode(payload[:-1])
    with pytest.raises(ValueError, match="after the last header"):
        decode(payload + b"x")
