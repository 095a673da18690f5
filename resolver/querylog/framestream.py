"""Frame Streams (fstrm), the framing dnstap travels in: a data frame is a 32-bit big-endian
length and the payload; a control frame is an "escape" length of 0, the control frame's length,
its type, and fields (here only CONTENT_TYPE: field id 1, length, the type's bytes).

Unidirectional (files, and a writer that need not wait): START (with the content type), data
frames, STOP. Bidirectional (sockets): the writer sends READY listing its content types, the
reader answers ACCEPT with the one it takes, the writer sends START, data frames, and at the end
STOP, which the reader answers with FINISH.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

ESCAPE = 0
ACCEPT = 0x01
START = 0x02
STOP = 0x03
READY = 0x04
FINISH = 0x05
FIELD_CONTENT_TYPE = 0x01
# Control frames are small; a bigger length is a broken or hostile peer (libfstrm allows 512).
MAX_CONTROL_BYTES = 512
MAX_DATA_BYTES = 1 << 20  # a dnstap message holds two DNS messages of at most 64 KiB each

_U32 = struct.Struct(">I")


class FrameError(Exception):
    """A stream that does not follow Frame Streams."""


def data_frame(payload: bytes) -> bytes:
    if not payload:
        raise ValueError("an empty data frame would read as a control frame escape")
    return _U32.pack(len(payload)) + payload


def control_frame(kind: int, content_types: Iterable[bytes] = ()) -> bytes:
    body = _U32.pack(kind) + b"".join(
        _U32.pack(FIELD_CONTENT_TYPE) + _U32.pack(len(ct)) + ct for ct in content_types
    )
    return _U32.pack(ESCAPE) + _U32.pack(len(body)) + body


@dataclass(frozen=True, slots=True)
class Control:
    kind: int
    content_types: tuple[bytes, ...]


def parse_control(body: bytes) -> Control:
    if len(body) < 4:
        raise FrameError("control frame shorter than its type")
    kind = _U32.unpack_from(body, 0)[0]
    types: list[bytes] = []
    pos = 4
    while pos < len(body):
        if pos + 8 > len(body):
            raise FrameError("truncated control field")
        field, length = _U32.unpack_from(body, pos)[0], _U32.unpack_from(body, pos + 4)[0]
        pos += 8
        if pos + length > len(body):
            raise FrameError("control field longer than its frame")
        if field == FIELD_CONTENT_TYPE:
            types.append(body[pos : pos + length])
        pos += length
    return Control(kind, tuple(types))


class FrameReader:
    """Incremental parsing: feed bytes as they arrive, take whole frames out. Each frame is
    bytes (a data frame's payload) or a Control."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes | Control]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes | Control] = []
        pos = 0
        while len(buffer) - pos >= 4:
            length = _U32.unpack_from(buffer, pos)[0]
            if length == ESCAPE:
                if len(buffer) - pos < 8:
                    break
                size = _U32.unpack_from(buffer, pos + 4)[0]
                if size > MAX_CONTROL_BYTES:
                    raise FrameError(f"control frame of {size} bytes")
                if len(buffer) - pos < 8 + size:
                    break
                frames.append(parse_control(bytes(buffer[pos + 8 : pos + 8 + size])))
                pos += 8 + size
            else:
                if length > MAX_DATA_BYTES:
                    raise FrameError(f"data frame of {length} bytes")
                if len(buffer) - pos < 4 + length:
                    break
                frames.append(bytes(buffer[pos + 4 : pos + 4 + length]))
                pos += 4 + length
        del buffer[:pos]
        return frames
