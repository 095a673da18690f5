"""Building responses by concatenating bytes: the header flags of synthesized and relayed
answers, the OPT record and the Extended DNS Error option, and the answers blokir makes itself
but for block answers (resolver.dns.answers): an error RCODE, a truncated answer, the minimal
answer to ANY. References: RFC 1035 section 4.1 (message format), RFC 6891 (EDNS(0), the OPT
record), RFC 8914 (Extended DNS Errors), RFC 8482 (minimal answers to ANY).
"""

from __future__ import annotations

import struct
from typing import Final

from resolver.dns.constants import (
    AD,
    CD,
    EDNS_DO,
    HEADER_SIZE,
    MAX_TTL,
    NOERROR,
    OPCODE_MASK,
    OPTION_EDE,
    QR,
    RA,
    RCODE_MASK,
    RD,
    TC,
    TYPE_HINFO,
    TYPE_OPT,
)
from resolver.dns.query import Query

_HEADER: Final = struct.Struct("!HHHHHH")
_U16: Final = struct.Struct("!H")
_OPT_FIXED: Final = struct.Struct("!HHIH")  # type, class (payload size), ttl (flags), rdlength
_RR_POINTED: Final = struct.Struct("!HHHIH")  # owner pointer, type, class, TTL, RDLENGTH
_QNAME_POINTER: Final = 0xC000 | HEADER_SIZE  # the question name, at offset 12 (RFC 1035 4.1.4)
# RFC 8482 4.2: the synthesized HINFO's CPU is "RFC8482" and its OS the empty string.
_HINFO_RFC8482: Final = b"\x07RFC8482\x00"
ANY_TTL: Final = 3600  # a default for any_minimal_answer; RFC 8482 4.2 leaves it to the operator


def response_flags(query_flags: int, rcode: int) -> int:
    """QR set; OPCODE and RD copied (RFC 1035 4.1.1: "copied into the response", which matters
    for the NOTIMP answer to another opcode), CD copied (RFC 4035 3.2.2); RA set for a QUERY
    (recursion is what blokir offers; for other opcodes the bit has no meaning, and a NOTIMP
    answer to them claims nothing); AA never: a forwarder's synthesized answers are not
    authoritative."""
    ra = RA if not query_flags & OPCODE_MASK else 0
    return QR | ra | (query_flags & (OPCODE_MASK | RD | CD)) | (rcode & RCODE_MASK)


def relay_flags(query_flags: int, wants_ad: bool, upstream_flags: int) -> int:
    """The header flags of an upstream answer relayed to an asker (forwarded, cached, shared,
    stale): everything that describes the exchange comes from this asker's query, not from the
    query that filled the cache (RFC 1035 4.1.1: RD copied; RFC 4035 3.2.2: CD copied), RA set,
    AA clear (blokir is not authoritative for what it relays), TC clear (set again by the
    caller when the answer does not fit this client's UDP limit) and Z clear. From the
    upstream only the RCODE and AD: AD only for an asker that set AD or DO (RFC 6840 5.7,
    5.8), and only as the upstream set it, since blokir does not validate."""
    kept = RCODE_MASK | AD if wants_ad else RCODE_MASK
    return QR | RA | (query_flags & (OPCODE_MASK | RD | CD)) | (upstream_flags & kept)


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
        qid, response_flags(flags, rcode & RCODE_MASK), 1 if question else 0, 0, 0, 1 if edns else 0
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


def question_record(rtype: int, rclass: int, ttl: int, rdata: bytes) -> bytes:
    """A resource record owned by the question name: a compression pointer to it at offset 12
    (RFC 1035 4.1.4), so the answer repeats the name in the asker's letter case."""
    return _RR_POINTED.pack(_QNAME_POINTER, rtype, rclass, ttl, len(rdata)) + rdata


def any_minimal_answer(data: bytes, query: Query, payload: int, ttl: int) -> bytes:
    """RFC 8482 4.2: the answer to an ANY query (over UDP, where ANY is an amplification tool)
    is one synthesized HINFO record, CPU "RFC8482" and OS "", owned by the question name
    (a pointer to the echoed question, so the client's letter case is kept), NOERROR. `data`
    is the query as received (its ID is copied); `ttl` is the operator's choice (RFC 8482 4.2;
    ANY_TTL is a default). An OPT record answers an EDNS query (RFC 6891 7)."""
    ttl = min(max(ttl, 0), MAX_TTL)
    header = (
        data[:2]
        + _HEADER.pack(0, response_flags(query.flags, NOERROR), 1, 1, 0, 1 if query.edns else 0)[2:]
    )
    record = question_record(TYPE_HINFO, query.qclass, ttl, _HINFO_RFC8482)
    if query.edns:
        record += opt_record(payload, query.do)
    return header + query.question + record
