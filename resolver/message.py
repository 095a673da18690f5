"""A minimal, safe walker over DNS messages in wire format (RFC 1035 section 4.1).

The server needs a handful of facts from upstream responses: where the TTL fields are (the cache
rewrites them), the targets of CNAME/DNAME records (a blocked name can hide behind an allowed
one), and the SOA of a negative answer (RFC 2308). Building dnspython or dnslib objects for that
costs tens of microseconds per message; this module reads the bytes in place instead.

Every function treats its input as hostile: anything malformed raises `MessageError` (never
IndexError or struct.error), and every loop is bounded by the message length or by the name
limits of RFC 1035 section 2.3.4. Compression pointers (section 4.1.4) must point strictly
before the part of the name that holds them, which rules out loops by construction; the hop
bound is a second fence.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "ADDITIONAL",
    "ANSWER",
    "AUTHORITY",
    "HEADER_LEN",
    "MessageError",
    "Record",
    "cname_targets",
    "negative_ttl",
    "read_name",
    "remove_options",
    "skip_name",
    "walk",
    "within_limit",
    "without_options",
]

HEADER_LEN = 12  # RFC 1035 4.1.1: ID, flags and four 16-bit counts
MAX_NAME_OCTETS = 255  # RFC 1035 2.3.4, counted on the wire: length octets and the root included
# 255 octets hold at most 127 one-octet labels plus the root: 128 labels, so the octet limit
# enforces the label limit too.
MAX_LABELS = 128
# Encoders point at a suffix that was written out before, so a name needs at most one hop per
# label; a longer chain is pointers pointing at pointers, which no encoder writes.
MAX_POINTER_HOPS = MAX_LABELS
MAX_TTL = 0x7FFFFFFF  # RFC 2181 section 8: a TTL with the top bit set is treated as zero

# The smallest question is the root name plus QTYPE and QCLASS; the smallest resource record is
# the root name plus TYPE, CLASS, TTL and RDLENGTH. Used to reject absurd counts up front.
_MIN_QUESTION = 1 + 4
_MIN_RECORD = 1 + 10

ANSWER, AUTHORITY, ADDITIONAL = 0, 1, 2

RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_DNAME = 39  # RFC 6672
TYPE_OPT = 41  # RFC 6891: its TTL field is the extended RCODE and flags, not a TTL
TYPE_NS = 2
TYPE_SIG = 24  # SIG(0), RFC 2931: signs the whole message, as TSIG does
TYPE_TSIG = 250  # RFC 8945

_HEADER = struct.Struct("!HHHHHH")
_OPTION_HEAD = struct.Struct("!HH")  # OPTION-CODE, OPTION-LENGTH (RFC 6891 6.1.2)
# The last 11 octets of a message whose last record is an OPT without options: the root owner,
# TYPE 41, CLASS and TTL (any), RDLENGTH 0.
_EMPTY_OPT_HEAD = b"\x00\x00\x29"
_EMPTY_RDLENGTH = b"\x00\x00"
_RR_FIXED = struct.Struct("!HHIH")  # TYPE, CLASS, TTL, RDLENGTH after the owner name
_U32 = struct.Struct("!I")

# Bytes that stand for themselves in a name: printable ASCII except '.' (the label separator) and
# '\\' (the escape character). Anything else is written as \DDD (RFC 1035 5.1) so that two
# different wire names never read back as the same text. The pattern runs over the joined name,
# so it lets '.' through; dots inside labels are caught by counting them.
_UNSAFE = re.compile(rb"[^!-\[\]-~]")
_ESCAPED = tuple(
    bytes([b]) if 0x21 <= b <= 0x7E and b not in b".\\" else b"\\%03d" % b for b in range(256)
)


class MessageError(ValueError):
    """A DNS message that is truncated or malformed; the text says what and where."""


@dataclass(slots=True)
class Record:
    """One resource record, located in the message rather than copied out of it."""

    section: int  # ANSWER, AUTHORITY or ADDITIONAL
    name_offset: int
    rtype: int
    rclass: int
    ttl: int  # as on the wire: unsigned 32-bit (for OPT: extended RCODE and flags)
    ttl_offset: int
    rdata_offset: int
    rdlength: int


def _name_end(msg: bytes, offset: int, labels: list[bytes] | None) -> int:
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
        kind = length & 0xC0
        if kind == 0:
            start = pos + 1
            pos = start + length
            if pos > n:
                raise MessageError(f"label at offset {start - 1} runs past the end of the message")
            octets += length + 1
            if octets > MAX_NAME_OCTETS:
                raise MessageError(f"name at offset {offset} is longer than 255 octets")
            if labels is not None:
                labels.append(msg[start:pos])
        elif kind == 0xC0:
            if pos + 1 >= n:
                raise MessageError(f"pointer at offset {pos} is cut off")
            target = (length & 0x3F) << 8 | msg[pos + 1]
            if target >= segment or target < HEADER_LEN:
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
            raise MessageError(f"unsupported label type {kind:#04x} at offset {pos}")


def skip_name(msg: bytes, offset: int) -> int:
    """The offset just after the (possibly compressed) name at `offset`. The whole name is
    checked, pointers included, so a name that skips cleanly also reads cleanly."""
    return _name_end(msg, offset, None)


def read_name(msg: bytes, offset: int) -> tuple[bytes, int]:
    """The name at `offset` as lower-case dotted ASCII without the trailing dot (the root is
    b""), and the offset just after it. Bytes other than printable ASCII, and '.' or '\\'
    inside a label, are written as \\DDD, so the text of different names never collides."""
    labels: list[bytes] = []
    end = _name_end(msg, offset, labels)
    name = b".".join(labels)
    # Fast path: only safe bytes, and every dot is a separator.
    if name.count(b".") == len(labels) - 1 and _UNSAFE.search(name) is None:
        return name.lower(), end
    return b".".join(b"".join(_ESCAPED[b] for b in label.lower()) for label in labels), end


def walk(msg: bytes) -> tuple[int, list[Record]]:
    """The offset just after the question section, and every resource record of the answer,
    authority and additional sections in order. Bytes after the last record are an error."""
    n = len(msg)
    if n < HEADER_LEN:
        raise MessageError(f"message of {n} bytes is shorter than the 12-byte header")
    _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    rrcount = ancount + nscount + arcount
    if HEADER_LEN + qdcount * _MIN_QUESTION + rrcount * _MIN_RECORD > n:
        raise MessageError(f"section counts do not fit in a message of {n} bytes")
    pos = HEADER_LEN
    # Offsets of names already checked whole. Most owner names are one pointer to one of them
    # (usually the question), which then needs no second walk: it starts before `pos`, so the
    # pointer points backwards, and everything it leads to is known to be good.
    checked: set[int] = set()
    for _ in range(qdcount):
        checked.add(pos)
        pos = _name_end(msg, pos, None) + 4
        if pos > n:
            raise MessageError("question runs past the end of the message")
    question_end = pos
    records: list[Record] = []
    append = records.append
    unpack_fixed = _RR_FIXED.unpack_from
    section_end = (ancount, ancount + nscount)
    for i in range(rrcount):
        name_offset = pos
        if pos + 1 < n and msg[pos] >= 0xC0 and ((msg[pos] & 0x3F) << 8 | msg[pos + 1]) in checked:
            pos += 2
        else:
            checked.add(pos)
            pos = _name_end(msg, pos, None)
        if pos + 10 > n:
            raise MessageError(f"record at offset {name_offset} runs past the end of the message")
        rtype, rclass, ttl, rdlength = unpack_fixed(msg, pos)
        rdata_offset = pos + 10
        end = rdata_offset + rdlength
        if end > n:
            raise MessageError(f"rdata at offset {rdata_offset} runs past the end of the message")
        section = ANSWER if i < section_end[0] else AUTHORITY if i < section_end[1] else ADDITIONAL
        append(Record(section, name_offset, rtype, rclass, ttl, pos + 4, rdata_offset, rdlength))
        pos = end
    if pos != n:
        raise MessageError(f"{n - pos} bytes after the last record")
    return question_end, records


def cname_targets(msg: bytes) -> list[bytes]:
    """The targets of every CNAME and DNAME record in the answer section, in message order,
    as `read_name` text. A target that does not fill its RDATA exactly is an error."""
    targets: list[bytes] = []
    for record in walk(msg)[1]:
        if record.section != ANSWER:
            break
        if record.rtype == TYPE_CNAME or record.rtype == TYPE_DNAME:
            name, end = read_name(msg, record.rdata_offset)
            if end != record.rdata_offset + record.rdlength:
                raise MessageError(
                    f"target name at offset {record.rdata_offset} does not fill its RDATA"
                )
            targets.append(name)
    return targets


def _as_ttl(value: int) -> int:
    return value if value <= MAX_TTL else 0


def negative_ttl(msg: bytes, records: list[Record] | None = None) -> int | None:
    """How long a negative answer may be cached: min(SOA TTL, SOA MINIMUM) over the SOA records
    of the authority section (RFC 2308 section 5), or None when there is none, or when the
    RCODE is neither NOERROR nor NXDOMAIN. Whether a NOERROR answer is NODATA is for the caller
    to decide. `records` may pass in `walk(msg)[1]` to avoid walking twice. A TTL or MINIMUM
    with the top bit set counts as 0 (RFC 2181 section 8)."""
    if records is None:
        records = walk(msg)[1]
    elif len(msg) < HEADER_LEN:
        raise MessageError("message shorter than the header")
    if msg[3] & 0x0F not in (RCODE_NOERROR, RCODE_NXDOMAIN):
        return None
    best: int | None = None
    for record in records:
        if record.section != AUTHORITY or record.rtype != TYPE_SOA:
            continue
        end = record.rdata_offset + record.rdlength
        pos = skip_name(msg, record.rdata_offset)  # MNAME
        pos = skip_name(msg, pos)  # RNAME
        if pos + 20 != end:  # SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM
            raise MessageError(f"SOA rdata at offset {record.rdata_offset} is malformed")
        minimum = _U32.unpack_from(msg, pos + 16)[0]
        value = min(_as_ttl(record.ttl), _as_ttl(minimum))
        if best is None or value < best:
            best = value
    return best


def without_options(msg: bytes, codes: frozenset[int]) -> bytes:
    """`msg` without the EDNS options in `codes` (its OPT record shrunk to fit), or `msg` itself
    when it has none of them, or does not parse (whoever reads it next rejects it).

    Cheap for the common answers: nothing to do without an additional section, nor when the
    message ends in an OPT record without options, which is how servers lay it out (a byte
    pattern: a message whose last record merely ends the same way keeps its options). Anything
    else is walked to find the OPT record, in the additional section only (RFC 6891 6.1.1)."""
    if len(msg) < HEADER_LEN or not (msg[10] or msg[11]):
        return msg
    if msg[-11:-8] == _EMPTY_OPT_HEAD and msg[-2:] == _EMPTY_RDLENGTH:
        return msg
    try:
        records = walk(msg)[1]
    except MessageError:
        return msg
    for record in records:
        if record.section == ADDITIONAL and record.rtype == TYPE_OPT:
            start = record.rdata_offset
            return remove_options(msg, start, start + record.rdlength, codes)
    return msg


def remove_options(msg: bytes, start: int, end: int, codes: frozenset[int]) -> bytes:
    """`msg` with the EDNS options in `codes` taken out of the OPT RDATA msg[start:end] and the
    RDLENGTH before it (msg[start - 2:start]) set to what is left; `msg` itself when none of
    them is there, or when an option overruns the RDATA (not ours to repair). Used for queries
    (wire.upstream_request) and answers (without_options) alike."""
    kept: list[bytes] = []
    pos = start
    while pos + 4 <= end:
        code, length = _OPTION_HEAD.unpack_from(msg, pos)
        if pos + 4 + length > end:
            return msg
        if code not in codes:
            kept.append(msg[pos : pos + 4 + length])
        pos += 4 + length
    options = b"".join(kept)
    if pos != end or len(options) == end - start:
        return msg  # malformed, or nothing to remove
    return msg[: start - 2] + len(options).to_bytes(2, "big") + options + msg[end:]


def within_limit(msg: bytes, limit: int) -> bytes | None:
    """`msg` without the records an answer does not require, if that fits in `limit` octets;
    None when it does not (the caller sets TC), or when nothing may be taken out.

    RFC 2181 9: TC is set only when a required RRset does not fit, "not merely because some
    extra information could have been included". First the additional section goes (glue, but
    the OPT record stays: RFC 6891 7); then, for an answer with records, an authority section
    of NS records only (an upstream's referral data; an NSEC or SOA there is part of the
    answer, RFC 4035 3.1.3, RFC 2308 3). Records kept are a prefix of the message, so their
    compression pointers, which only point backwards (RFC 1035 4.1.4), stay valid; the OPT
    record holds no names. A signed message (TSIG, SIG(0)) is left whole."""
    try:
        question_end, records = walk(msg)
    except MessageError:
        return None
    answer_end = authority_end = question_end
    answers = 0
    only_ns = True
    opt = b""
    for record in records:
        end = record.rdata_offset + record.rdlength
        if record.section == ANSWER:
            answers += 1
            answer_end = authority_end = end
        elif record.section == AUTHORITY:
            authority_end = end
            only_ns = only_ns and record.rtype == TYPE_NS
        elif record.rtype == TYPE_TSIG or record.rtype == TYPE_SIG:
            return None
        elif record.rtype == TYPE_OPT and msg[record.name_offset] == 0:
            opt = msg[record.name_offset : end]
    arcount = b"\x00\x01" if opt else b"\x00\x00"
    kept = msg[:10] + arcount + msg[HEADER_LEN:authority_end] + opt
    if len(kept) <= limit:
        return kept
    if answers and only_ns:
        kept = msg[:8] + b"\x00\x00" + arcount + msg[HEADER_LEN:answer_end] + opt
        if len(kept) <= limit:
            return kept
    return None
