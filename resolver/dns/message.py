"""A minimal, safe walker over whole DNS messages in wire format (RFC 1035 section 4.1).

The server needs a handful of facts from upstream responses: where the TTL fields are (the cache
rewrites them), the targets of CNAME/DNAME records (a blocked name can hide behind an allowed
one), and the SOA of a negative answer (RFC 2308). Building dnspython or dnslib objects for that
costs tens of microseconds per message; this module reads the bytes in place instead.

Every function treats its input as hostile: anything malformed raises `MessageError` (never
IndexError or struct.error), and every loop is bounded by the message length; names are read by
resolver.dns.names, which bounds them by the limits of RFC 1035 section 2.3.4.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from resolver.dns.constants import (
    HEADER_SIZE,
    MAX_TTL,
    NOERROR,
    NXDOMAIN,
    TYPE_CNAME,
    TYPE_DNAME,
    TYPE_NS,
    TYPE_OPT,
    TYPE_SIG,
    TYPE_SOA,
    TYPE_TSIG,
)
from resolver.dns.names import MessageError, name_end, read_name, skip_name

__all__ = [
    "ADDITIONAL",
    "ANSWER",
    "AUTHORITY",
    "Record",
    "cname_targets",
    "negative_ttl",
    "remove_options",
    "walk",
    "within_limit",
    "without_options",
]

# The smallest question is the root name plus QTYPE and QCLASS; the smallest resource record is
# the root name plus TYPE, CLASS, TTL and RDLENGTH. Used to reject absurd counts up front.
_MIN_QUESTION: Final = 1 + 4
_MIN_RECORD: Final = 1 + 10

ANSWER: Final = 0
AUTHORITY: Final = 1
ADDITIONAL: Final = 2

_HEADER: Final = struct.Struct("!HHHHHH")
_OPTION_HEAD: Final = struct.Struct("!HH")  # OPTION-CODE, OPTION-LENGTH (RFC 6891 6.1.2)
# The last 11 octets of a message whose last record is an OPT without options: the root owner,
# TYPE 41, CLASS and TTL (any), RDLENGTH 0.
_EMPTY_OPT_HEAD: Final = b"\x00\x00\x29"
_EMPTY_RDLENGTH: Final = b"\x00\x00"
_RR_FIXED: Final = struct.Struct("!HHIH")  # TYPE, CLASS, TTL, RDLENGTH after the owner name
_U32: Final = struct.Struct("!I")


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


def walk(msg: bytes) -> tuple[int, list[Record]]:
    """The offset just after the question section, and every resource record of the answer,
    authority and additional sections in order. Bytes after the last record are an error."""
    n = len(msg)
    if n < HEADER_SIZE:
        raise MessageError(f"message of {n} bytes is shorter than the 12-byte header")
    _, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    rrcount = ancount + nscount + arcount
    if HEADER_SIZE + qdcount * _MIN_QUESTION + rrcount * _MIN_RECORD > n:
        raise MessageError(f"section counts do not fit in a message of {n} bytes")
    pos = HEADER_SIZE
    # Offsets of names already checked whole. Most owner names are one pointer to one of them
    # (usually the question), which then needs no second walk: it starts before `pos`, so the
    # pointer points backwards, and everything it leads to is known to be good.
    checked: set[int] = set()
    for _ in range(qdcount):
        checked.add(pos)
        pos = name_end(msg, pos, None) + 4
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
            pos = name_end(msg, pos, None)
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
    elif len(msg) < HEADER_SIZE:
        raise MessageError("message shorter than the header")
    if msg[3] & 0x0F not in (NOERROR, NXDOMAIN):
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
    if len(msg) < HEADER_SIZE or not (msg[10] or msg[11]):
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
    (query.upstream_request) and answers (without_options) alike."""
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
    kept = msg[:10] + arcount + msg[HEADER_SIZE:authority_end] + opt
    if len(kept) <= limit:
        return kept
    if answers and only_ns:
        kept = msg[:8] + b"\x00\x00" + arcount + msg[HEADER_SIZE:answer_end] + opt
        if len(kept) <= limit:
            return kept
    return None
