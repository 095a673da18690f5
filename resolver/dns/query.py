"""Parsing a client's query on the hot path: its header, question and OPT record straight from
bytes; and the query as it goes upstream.

Nothing here allocates dnslib or dnspython objects: a query costs a struct unpack, a walk over
its labels and one small object. The parser is strict (see parse_query): a query blokir accepts
is forwarded upstream byte for byte (but for the ID and the client's own EDNS options, see
HOP_BY_HOP_OPTIONS), so every byte of it must have been understood; anything else gets the RFC's
error answer (resolver.dns.response) or, for responses and runt packets, silence. References:
RFC 1035 section 4.1 (message format), RFC 6891 (EDNS(0), the OPT record).
"""

from __future__ import annotations

import struct
from typing import Final

from resolver.dns.constants import (
    AD,
    BADVERS,
    CD,
    CLASS_CH,
    CLASS_HS,
    CLASS_IN,
    EDNS_DO,
    FORMERR,
    HEADER_SIZE,
    MAX_LABEL,
    MAX_NAME_WIRE,
    MIN_UDP_PAYLOAD,
    NOTIMP,
    OPCODE_MASK,
    OPTION_COOKIE,
    OPTION_ECS,
    OPTION_NSID,
    OPTION_PADDING,
    OPTION_TCP_KEEPALIVE,
    QR,
    RD,
    TYPE_OPT,
)
from resolver.dns.message import remove_options
from resolver.dns.names import MessageError, skip_name

_HEADER: Final = struct.Struct("!HHHHHH")
_U16: Final = struct.Struct("!H")
_QTAIL: Final = struct.Struct("!HH")
_OPT_FIXED: Final = struct.Struct("!HHIH")  # type, class (payload size), ttl (flags), rdlength

# Classes a query may ask (RFC 6895 3.2): data classes only. QCLASS ANY (255) is refused with
# NOTIMP rather than forwarded: the block check is per class IN, and "any class" includes IN.
# NONE (254) belongs to UPDATE, 0 and 65535 are reserved, the rest unassigned or private.
QUERY_CLASSES: Final = frozenset((CLASS_IN, CLASS_CH, CLASS_HS))

# Options about the client or its connection, not about the question. OPT is hop by hop (RFC
# 6891 6.1.1: it is not forwarded or cached), and these are why that matters for a forwarder
# with a shared cache: a forwarded COOKIE comes back holding this client's cookie, which the next
# client served from the cache must discard as a mismatch (RFC 7873 5.3); an ECS answer is
# tailored to one client's subnet and names it (RFC 7871 11.3); NSID would name the upstream to
# clients that did not ask (RFC 5001 2.1); keepalive is for the client's TCP connection and never
# for UDP (RFC 7828 3.2.1); padding pads one encrypted hop (RFC 7830). They are removed from
# queries going upstream and from answers coming back; other options pass as they came.
HOP_BY_HOP_OPTIONS: Final = frozenset(
    (OPTION_NSID, OPTION_ECS, OPTION_COOKIE, OPTION_TCP_KEEPALIVE, OPTION_PADDING)
)

_DOT: Final = 0x2E
_BACKSLASH: Final = 0x5C  # an int: `in` on bytes is a memchr, far cheaper than a bytes needle


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
        "hop_options",
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
        # A label holding a "." or "\\" byte (RFC 4343 allows any octet in a label): `qname`
        # then has those escaped (RFC 1035 5.1), which no list entry has, so it is never looked
        # up in the index and its cache key is its own.
        self.unmatchable = unmatchable
        self.edns = False
        self.do = False
        self.payload = MIN_UDP_PAYLOAD
        # Where the OPT record's options start when some are HOP_BY_HOP_OPTIONS (0: none are);
        # see upstream_request.
        self.hop_options = 0


def parse_query(data: bytes) -> Query:
    """Parse a query or raise ParseError saying how to answer it.

    Dropped without an answer (rcode None): shorter than a header (no ID to answer to), or QR=1
    (a response sent to us: answering responses invites reflection loops between servers).

    NOTIMP (RFC 1035 4.1.1, "does not support the requested kind of query"): any opcode but
    QUERY (RFC 6895 2.2: NOTIFY, UPDATE, DSO and unassigned ones); a QCLASS outside
    QUERY_CLASSES.

    FORMERR (RFC 1035 4.1.1, "unable to interpret the query"): QDCOUNT != 1 (RFC 9619); a
    question name with a compression pointer (a query's first name has nothing before it to
    point at, RFC 1035 4.1.4), a reserved label type, a label running past the end or more than
    255 octets (RFC 1035 2.3.4); a truncated question; records in the answer or authority
    section; bytes after the last record; a bad OPT record (RFC 6891 6.1.1: a non-root owner, a
    second OPT, options that do not exactly fill the RDATA; RFC 7873 5.2.2: a COOKIE option of
    an impossible length).

    BADVERS: an EDNS version above 0 (RFC 6891 6.1.3), answered with our version-0 OPT.

    Strict on purpose: an accepted query is forwarded upstream byte for byte (with a fresh ID,
    less HOP_BY_HOP_OPTIONS: upstream_request), so nothing blokir did not understand may ride
    along to the upstream or into its cache."""
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
    # The root octet must come before both the end and offset 12 + 255 (RFC 1035 2.3.4): one
    # comparison per label bounds the walk, so 64 KiB of one-octet labels stops early.
    limit = size if size < _QUESTION_NAME_LIMIT else _QUESTION_NAME_LIMIT
    labels = 0
    short = True  # every label shorter than 45 octets: see _NAME_TEXT
    while True:
        if pos >= limit:
            raise ParseError(FORMERR, "truncated name" if pos >= size else "name too long")
        length = data[pos]
        if length == 0:
            break
        if length > MAX_LABEL:
            # Compression pointers (>= 0xC0) have nothing earlier to point at in a question;
            # 0x40-0xBF are the reserved and deprecated extended label types (RFC 6891 5).
            raise ParseError(FORMERR, "label")
        if length > _SHORT_LABEL:
            short = False
        pos += length + 1
        labels += 1
    question_end = pos + 5
    if question_end > size:
        raise ParseError(FORMERR, "truncated question")
    qtype, qclass = _QTAIL.unpack_from(data, pos + 1)
    if labels:
        # The common case in one C call: every length octet between labels becomes "." and
        # A-Z lower case. It is the dotted name exactly when the dots counted match the labels
        # (no label byte below 0x2D, which would also become a dot, and no "." in a label) and
        # no backslash needs escaping; anything else takes _dotted_name.
        qname = data[HEADER_SIZE + 1 : pos].translate(_NAME_TEXT)
        unmatchable = False
        if not short or qname.count(b".") != labels - 1 or _BACKSLASH in qname:
            qname, unmatchable = _dotted_name(data, pos)
    else:
        qname = b""
        unmatchable = False
    query = Query(
        qid,
        flags,
        qname,
        qtype,
        qclass,
        data[HEADER_SIZE:question_end],
        question_end,
        unmatchable,
    )
    if ancount or nscount:
        # A query has nothing to say there (only UPDATE and NOTIFY use these sections, and
        # they are NOTIMP); Unbound answers FORMERR too, and forwarding them would hand the
        # upstream records no one checked.
        raise ParseError(FORMERR, "records in the answer or authority section", query)
    if not arcount:
        end = question_end
    elif arcount == 1 and size >= question_end + 11 and data[question_end] == 0:
        rtype, rclass, ttl, rdlength = _OPT_FIXED.unpack_from(data, question_end + 1)
        end = question_end + 11 + rdlength
        if rtype != TYPE_OPT:
            end = _parse_additional(data, query, question_end, arcount)
        elif rdlength or ttl & 0xFF0000 or end != size:
            _use_opt(data, query, rclass, ttl, question_end + 11, end)
        else:  # the common shape, inline: one OPT, no options, version 0, nothing after it
            query.edns = True
            query.payload = rclass if rclass > MIN_UDP_PAYLOAD else MIN_UDP_PAYLOAD
            query.do = bool(ttl & EDNS_DO)
    else:
        end = _parse_additional(data, query, question_end, arcount)
    if end != size:
        raise ParseError(FORMERR, "bytes after the last record", query)
    if qclass not in QUERY_CLASSES:
        raise ParseError(NOTIMP, "class", query)
    return query


# Label lengths up to 44 (0x01-0x2C) map to "." and A-Z to a-z; longer lengths would be read
# as "-" (0x2D) or digits, so a name with such a label takes _dotted_name.
_SHORT_LABEL: Final = 0x2C
_NAME_TEXT: Final = bytes(
    _DOT if 0 < byte <= _SHORT_LABEL else byte + 32 if 0x41 <= byte <= 0x5A else byte
    for byte in range(256)
)


def _dotted_name(data: bytes, end: int) -> tuple[bytes, bool]:
    """The lower-case dotted name of the question name ending (root octet) at `end`, which
    parse_query has checked, and whether it is unmatchable (see Query)."""
    labels = []
    pos = HEADER_SIZE
    while pos < end:
        length = data[pos]
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += length + 1
    qname = b".".join(labels).lower()
    unmatchable = qname.count(b".") != len(labels) - 1 or _BACKSLASH in qname
    if unmatchable:
        # The dotted text of a label holding "." would be another name's: ["www.victim",
        # "example"] would share the cache key of www.victim.example, and the upstream's
        # NXDOMAIN for the odd name would be served for the real one. Escaping "." and the
        # backslash itself with a backslash (RFC 1035 5.1) makes the text unique, and no
        # ordinary name holds a backslash.
        qname = b".".join(_escape_label(label) for label in labels).lower()
    return qname, unmatchable


def _escape_label(label: bytes) -> bytes:
    return label.replace(b"\\", b"\\\\").replace(b".", b"\\.")


# A question name starting at offset 12 may not reach this offset before its root octet.
_QUESTION_NAME_LIMIT: Final = HEADER_SIZE + MAX_NAME_WIRE


def _use_opt(data: bytes, query: Query, payload: int, ttl: int, start: int, end: int) -> None:
    """Take EDNS settings from an OPT record whose RDATA is data[start:end] (RFC 6891 6.1.2,
    6.1.3), then check the record: its options but HOP_BY_HOP_OPTIONS are forwarded as they
    came (where those are is noted for upstream_request). The settings are taken first because
    RFC 6891 7 requires an OPT in the FORMERR answer to a bad OPT record (so the client can tell
    a format error from a server without EDNS)."""
    query.edns = True
    query.payload = payload if payload > MIN_UDP_PAYLOAD else MIN_UDP_PAYLOAD  # RFC 6891 6.2.5
    query.do = bool(ttl & EDNS_DO)
    if end > len(data):
        raise ParseError(FORMERR, "truncated OPT", query)
    if ttl & 0xFF0000:
        # Checked before the options: another version may lay them out differently.
        raise ParseError(BADVERS, "EDNS version", query)
    pos = start
    hop = False
    while pos < end:
        if pos + 4 > end:
            raise ParseError(FORMERR, "truncated EDNS option", query)
        code, length = _QTAIL.unpack_from(data, pos)
        pos += 4 + length
        if code == OPTION_COOKIE and length != 8 and not 16 <= length <= 40:
            # RFC 7873 5.2.2: a client cookie alone (8) or with a server cookie (8 + 8..32).
            raise ParseError(FORMERR, "COOKIE option length", query)
        if code in HOP_BY_HOP_OPTIONS:
            hop = True
    if pos != end:
        raise ParseError(FORMERR, "EDNS option runs past the OPT record", query)
    if hop and end == len(data):
        # Only when OPT is the last record: a TSIG after it signs it (RFC 8945 4.3.3), and a
        # signed query must reach its server exactly as signed.
        query.hop_options = start


# The flags every upstream query carries: RD, for the upstreams are recursive resolvers and the
# answer is shared by every asker (an RD=0 query is never forwarded: Resolver.handle), and AD
# (RFC 6840 5.7: "I understand AD"), so a validating upstream says whether the answer validated
# and relay_flags can pass that on to the askers that want it. CD is the asker's: it is part of
# the cache key. Everything else is cleared (Z must be zero, RFC 1035 4.1.1).
UPSTREAM_SET_FLAGS: Final = RD | AD
UPSTREAM_KEPT_FLAGS: Final = OPCODE_MASK | CD


def upstream_request(data: bytes, query: Query) -> bytes:
    """The query as it goes upstream (the upstream pool puts a fresh ID on it): the client's,
    with the header flags of UPSTREAM_SET_FLAGS, and less any HOP_BY_HOP_OPTIONS. `data`
    itself when nothing changes. A query with an additional record besides OPT (a TSIG or
    SIG(0), which sign the header too: RFC 8945 4.3.3) goes exactly as it came."""
    flags = UPSTREAM_SET_FLAGS | (query.flags & UPSTREAM_KEPT_FLAGS)
    if flags != query.flags and _U16.unpack_from(data, 10)[0] <= query.edns:
        data = data[:2] + _U16.pack(flags) + data[4:]
    start = query.hop_options
    if not start:
        return data
    # parse_query checked the options and that the OPT record ends the message.
    return remove_options(data, start, len(data), HOP_BY_HOP_OPTIONS)


def _parse_additional(data: bytes, query: Query, pos: int, arcount: int) -> int:
    """Walk the additional section; return where it ends. Finds the OPT record (RFC 6891
    6.1.1: at most one, owner the root) among others such as a TSIG, whose bytes are forwarded
    as they came and so must at least be well formed."""
    size = len(data)
    seen_opt = False
    for _ in range(arcount):
        owner = pos
        try:
            pos = skip_name(data, pos)
        except MessageError:
            raise ParseError(FORMERR, "malformed name in the additional section", query) from None
        if pos + 10 > size:
            raise ParseError(FORMERR, "truncated record", query)
        rtype, rclass, ttl, rdlength = _OPT_FIXED.unpack_from(data, pos)
        start = pos + 10
        end = start + rdlength
        if rtype == TYPE_OPT:
            if seen_opt:
                raise ParseError(FORMERR, "two OPT records", query)
            seen_opt = True
            if data[owner] != 0:
                query.edns = True  # answered with an OPT all the same (RFC 6891 7)
                raise ParseError(FORMERR, "OPT with a non-root owner", query)
            _use_opt(data, query, rclass, ttl, start, end)
        elif end > size:
            raise ParseError(FORMERR, "truncated record data", query)
        pos = end
    return pos
