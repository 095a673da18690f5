"""Sans-I/O DNS wire helpers for the hot path: parse a query's header, question and OPT record
straight from bytes, and build responses by concatenating bytes.

Nothing here allocates dnslib or dnspython objects: a query costs a struct unpack, a walk over
its labels and one small object. References: RFC 1035 section 4.1 (message format), RFC 6891
(EDNS(0), the OPT record), RFC 8914 (Extended DNS Errors).
"""

from __future__ import annotations

import struct
from typing import Final

_HEADER: Final = struct.Struct("!HHHHHH")
_U16: Final = struct.Struct("!H")
_QTAIL: Final = struct.Struct("!HH")
_OPT_FIXED: Final = struct.Struct("!HHIH")  # type, class (payload size), ttl (flags), rdlength

HEADER_SIZE: Final = 12
MAX_NAME_WIRE: Final = 255  # RFC 1035 2.3.4, wire octets including the root label
MAX_LABEL: Final = 63  # RFC 1035 2.3.4; lengths 64-191 are reserved, 192+ are pointers
MIN_UDP_PAYLOAD: Final = 512  # RFC 1035 4.2.1 without EDNS; RFC 6891 6.2.5 floor with it

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2 for AD/CD).
QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
AD: Final = 0x0020
CD: Final = 0x0010
OPCODE_MASK: Final = 0x7800

# RCODEs (RFC 1035 4.1.1, RFC 6891 9 for the extended BADVERS).
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16

TYPE_A: Final = 1
TYPE_NS: Final = 2
TYPE_CNAME: Final = 5
TYPE_SOA: Final = 6
TYPE_AAAA: Final = 28
TYPE_OPT: Final = 41
TYPE_ANY: Final = 255
CLASS_IN: Final = 1

EDNS_DO: Final = 0x8000  # RFC 3225: in the OPT TTL field
OPTION_EDE: Final = 15  # RFC 8914 section 2

_DOT: Final = 0x2E


class ParseError(Exception):
    """A query that gets an error response (`rcode`) or, with `rcode` None, no response."""

    def __init__(self, rcode: int | None, reason: str, query: Query | None = None) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason
        self.query = query


class Query:
    """What the resolver needs from a query. `qname` is the lower-cased dotted name without the
    trailing dot (b"" for the root); `question` is the question section exactly as asked (0x20
    case intact), echoed in answers."""

    __slots__ = (
        "do",
        "edns",
        "flags",
        "id",
        "payload",
        "qclass",
        "qname",
        "qtype",
        "question",
        "question_end",
        "unmatchable",
    )

    def __init__(
        self,
        qid: int,
        flags: int,
        qname: bytes,
        qtype: int,
        qclass: int,
        question: bytes,
        question_end: int,
        unmatchable: bool,
    ) -> None:
        self.id = qid
        self.flags = flags
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.question = question
        self.question_end = question_end
        # A label holding a "." byte: its dotted text would alias another name, so it is never
        # looked up in the index (RFC 4343 allows any octet in a label).
        self.unmatchable = unmatchable
        self.edns = False
        self.do = False
        self.payload = MIN_UDP_PAYLOAD


def parse_query(data: bytes) -> Query:
    """Parse a query or raise ParseError saying how to answer it.

    Dropped without an answer (rcode None): shorter than a header, or QR=1 (a response sent to
    us; answering responses invites reflection loops). FORMERR: QDCOUNT != 1, a malformed name,
    a truncated question, a bad OPT record. NOTIMP: any opcode but QUERY (RFC 1035 4.1.1)."""
    size = len(data)
    if size < HEADER_SIZE:
        raise ParseError(None, "short header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        raise ParseError(None, "QR set")
    if flags & OPCODE_MASK:
        raise ParseError(NOTIMP, "opcode")
    if qdcount != 1:
        raise ParseError(FORMERR, "qdcount")
    pos = HEADER_SIZE
    labels: list[bytes] = []
    while True:
        if pos >= size:
            raise ParseError(FORMERR, "truncated name")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > MAX_LABEL:
            # Compression pointers (>= 0xC0) have nothing earlier to point at in a question.
            raise ParseError(FORMERR, "label")
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += length + 1
    if pos - HEADER_SIZE > MAX_NAME_WIRE:
        raise ParseError(FORMERR, "name too long")
    question_end = pos + 4
    if question_end > size:
        raise ParseError(FORMERR, "truncated question")
    qtype, qclass = _QTAIL.unpack_from(data, pos)
    qname = b".".join(labels).lower()
    query = Query(
        qid,
        flags,
        qname,
        qtype,
        qclass,
        data[HEADER_SIZE:question_end],
        question_end,
        qname.count(b".") != len(labels) - 1 if labels else False,
    )
    if arcount:
        # Fast path for the common shape: one OPT record right after the question.
        if (
            arcount == 1
            and not ancount
            and not nscount
            and size >= question_end + 11
            and data[question_end] == 0
        ):
            rtype, rclass, ttl, rdlength = _OPT_FIXED.unpack_from(data, question_end + 1)
            if rtype == TYPE_OPT and question_end + 11 + rdlength <= size:
                query.edns = True
                query.payload = rclass if rclass > MIN_UDP_PAYLOAD else MIN_UDP_PAYLOAD
                query.do = bool(ttl & EDNS_DO)
                if ttl & 0xFF0000:
                    raise ParseError(BADVERS, "EDNS version", query)
                return query
        _parse_additional(data, query, question_end, ancount + nscount, arcount)
    return query


def _parse_additional(data: bytes, query: Query, pos: int, skip: int, arcount: int) -> None:
    """Find the OPT record (RFC 6891 6.1.1: at most one, owner root). Records in the answer and
    authority sections of a query are skipped, not trusted."""
    size = len(data)
    try:
        for _ in range(skip):
            pos = _skip_record(data, pos)
        seen_opt = False
        for _ in range(arcount):
            if pos < size and data[pos] == 0 and pos + 11 <= size:
                rtype, rclass, ttl, rdlength = _OPT_FIXED.unpack_from(data, pos + 1)
                if rtype == TYPE_OPT:
                    if seen_opt:
                        raise ParseError(FORMERR, "two OPT records", query)
                    seen_opt = True
                    if pos + 11 + rdlength > size:
                        raise ParseError(FORMERR, "truncated OPT", query)
                    query.edns = True
                    query.payload = max(rclass, MIN_UDP_PAYLOAD)
                    query.do = bool(ttl & EDNS_DO)
                    if (ttl >> 16) & 0xFF:
                        raise ParseError(BADVERS, "EDNS version", query)
                    pos += 11 + rdlength
                    continue
            pos = _skip_record(data, pos, forbid_opt=True)
    except (IndexError, struct.error):
        raise ParseError(FORMERR, "truncated additional section", query) from None
    except _BadOpt:
        raise ParseError(FORMERR, "OPT with a non-root owner", query) from None


class _BadOpt(Exception):
    pass


def _skip_record(data: bytes, pos: int, forbid_opt: bool = False) -> int:
    hops = 0
    while True:
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:
            pos += 2
            break
        if length > MAX_LABEL:
            raise IndexError("label")
        pos += length + 1
        hops += 1
        if hops > 128:
            raise IndexError("name")
    rtype = _U16.unpack_from(data, pos)[0]
    if forbid_opt and rtype == TYPE_OPT:
        raise _BadOpt
    rdlength: int = _U16.unpack_from(data, pos + 8)[0]
    end = pos + 10 + rdlength
    if end > len(data):
        raise IndexError("rdata")
    return end


# -- building responses -----------------------------------------------------------------------


def response_flags(query_flags: int, rcode: int) -> int:
    """QR, RD and CD copied (RFC 1035 4.1.1, RFC 4035 3.2.2), RA set, AA never: a forwarder's
    synthesized answers are not authoritative."""
    return QR | RA | (query_flags & (RD | CD)) | (rcode & 0xF)


def opt_record(payload: int, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """An OPT pseudo-record (RFC 6891 6.1.2): root owner, CLASS = our UDP payload size, TTL =
    extended RCODE, version 0 and the DO bit echoed (RFC 3225 3)."""
    ttl = (ext_rcode << 24) | (EDNS_DO if do else 0)
    return b"\x00" + _OPT_FIXED.pack(TYPE_OPT, payload, ttl, len(options)) + options


def ede_option(info_code: int, extra_text: str = "") -> bytes:
    """RFC 8914 section 2: OPTION-CODE 15, INFO-CODE, EXTRA-TEXT in UTF-8 without NUL."""
    text = extra_text.encode("utf-8")
    return _U16.pack(OPTION_EDE) + _U16.pack(2 + len(text)) + _U16.pack(info_code) + text


def error_response(
    data: bytes, rcode: int, query: Query | None, payload: int, options: bytes = b""
) -> bytes:
    """A response carrying only an RCODE: the question echoed when it parsed, an OPT record when
    the query had one (RFC 6891 7: responders answer EDNS queries with EDNS)."""
    qid, flags = struct.unpack_from("!HH", data) if len(data) >= 4 else (0, 0)
    question = query.question if query is not None else b""
    edns = query is not None and query.edns
    header = _HEADER.pack(
        qid, response_flags(flags, rcode & 0xF), 1 if question else 0, 0, 0, 1 if edns else 0
    )
    if not edns:
        return header + question
    assert query is not None
    return header + question + opt_record(payload, query.do, rcode >> 4, options)


def truncated(response: bytes, query: Query, payload: int) -> bytes:
    """RFC 1035 4.2.1 / RFC 7766: an answer too large for the client's UDP limit becomes the
    header with TC set and the question, so the client retries over TCP."""
    flags = _U16.unpack_from(response, 2)[0] | TC
    header = _HEADER.pack(query.id, flags, 1, 0, 0, 1 if query.edns else 0)
    if query.edns:
        return header + query.question + opt_record(payload, query.do)
    return header + query.question
