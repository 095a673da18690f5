"""Domain names in wire format (RFC 1035 3.1, 4.1.4): the one walker over a possibly compressed
name, used by the query parser (records of the additional section), the message walker and the
upstream pool alike.

Every function treats its input as hostile: a malformed name raises `MessageError` (never
IndexError), and every loop is bounded by the message length and by the name limits of RFC 1035
section 2.3.4. A compression pointer must point strictly before the run of labels that holds it
("a prior occurrence", RFC 1035 4.1.4), which rules out loops by construction; MAX_POINTER_HOPS
is a second fence.
"""

from __future__ import annotations

import re
from typing import Final

from resolver.dns.constants import HEADER_SIZE, MAX_LABEL, MAX_NAME_WIRE, MAX_POINTER_HOPS

# Bytes that stand for themselves in a name: printable ASCII except '.' (the label separator) and
# '\\' (the escape character). Anything else is written as \DDD (RFC 1035 5.1) so that two
# different wire names never read back as the same text. The pattern runs over the joined name,
# so it lets '.' through; dots inside labels are caught by counting them.
_UNSAFE: Final = re.compile(rb"[^!-\[\]-~]")
_ESCAPED: Final = tuple(
    bytes([b]) if 0x21 <= b <= 0x7E and b not in b".\\" else b"\\%03d" % b for b in range(256)
)


class MessageError(ValueError):
    """A DNS message that is truncated or malformed; the text says what and where."""


def name_end(msg: bytes, offset: int, labels: list[bytes] | None = None) -> int:
    """Follows the name at `offset`, appending its labels to `labels` when given, and returns
    the offset just after the name where it is written (after its first pointer, if any)."""
    n = len(msg)
    pos = offset
    segment = offset  # where the labels now being read start; pointers must go before it
    after = -1
    octets = 1  # the root label
    hops = 0
    while True:
        if pos >= n:
            raise MessageError(f"name at offset {offset} runs past the end of the message")
        length = msg[pos]
        if length == 0:
            return pos + 1 if after < 0 else after
        if length <= MAX_LABEL:
            start = pos + 1
            pos = start + length
            if pos > n:
                raise MessageError(f"label at offset {start - 1} runs past the end of the message")
            octets += length + 1
            if octets > MAX_NAME_WIRE:
                raise MessageError(f"name at offset {offset} is longer than 255 octets")
            if labels is not None:
                labels.append(msg[start:pos])
        elif length >= 0xC0:
            if pos + 1 >= n:
                raise MessageError(f"pointer at offset {pos} is cut off")
            target = (length & 0x3F) << 8 | msg[pos + 1]
            if target >= segment or target < HEADER_SIZE:
                raise MessageError(
                    f"pointer at offset {pos} to {target} does not point back into the message"
                )
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise MessageError(f"name at offset {offset} follows too many pointers")
            if after < 0:
                after = pos + 2
            pos = segment = target
        else:
            # 0x40 was the extended label type (RFC 6891 section 5 retired it); 0x80 is reserved.
            raise MessageError(f"unsupported label type {length & 0xC0:#04x} at offset {pos}")


def skip_name(msg: bytes, offset: int) -> int:
    """The offset just after the (possibly compressed) name at `offset`. The whole name is
    checked, pointers included, so a name that skips cleanly also reads cleanly."""
    return name_end(msg, offset, None)


def read_name(msg: bytes, offset: int) -> tuple[bytes, int]:
    """The name at `offset` as lower-case dotted ASCII without the trailing dot (the root is
    b""), and the offset just after it. Bytes other than printable ASCII, and '.' or '\\'
    inside a label, are written as \\DDD, so the text of different names never collides."""
    labels: list[bytes] = []
    end = name_end(msg, offset, labels)
    name = b".".join(labels)
    # Fast path: only safe bytes, and every dot is a separator.
    if name.count(b".") == len(labels) - 1 and _UNSAFE.search(name) is None:
        return name.lower(), end
    return b".".join(b"".join(_ESCAPED[b] for b in label.lower()) for label in labels), end


def encode_name(text: str) -> bytes:
    """Dotted ASCII name -> uncompressed wire form (RFC 1035 3.1)."""
    out = bytearray()
    for label in text.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)
