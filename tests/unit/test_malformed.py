"""Malformed queries: each gets the answer its RFC prescribes, or is dropped, both from
parse_query and from the whole Resolver.handle over UDP and TCP; nothing raises and the
resolver keeps answering afterwards.

Answers checked per case: the ID echoed, QR=1, RA set for a QUERY, RD and OPCODE copied (RFC
1035 4.1.1), the question echoed when it parsed, an OPT record exactly when the query's OPT
parsed (RFC 6891 7). TCP framing cases (length prefixes) are tested with the TCP server, not here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rrset
import dns.tsigkeyring
import pytest

from resolver import metrics
from resolver.dns.constants import BADVERS, CD, FORMERR, NOTIMP, OPCODE_MASK, QR, RD, TYPE_OPT
from resolver.dns.query import ParseError, Query, parse_query
from resolver.pipeline import Resolver
from tests.unit.resolvers import make_resolver

BLOCKED = "judi-contoh.example"
CLIENT = "127.0.0.1"


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    return make_resolver(tmp_path, [BLOCKED])


def make(
    name: str = "WwW.Example.COM", rdtype: str = "A", qid: int = 0x1234, **kw: object
) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    message.id = qid
    return message.to_wire()


def with_counts(data: bytes, qd: int | None = None, an: int | None = None, ns: int | None = None,
                ar: int | None = None) -> bytes:  # fmt: skip
    counts = list(struct.unpack_from("!HHHH", data, 4))
    for slot, value in enumerate((qd, an, ns, ar)):
        if value is not None:
            counts[slot] = value
    return data[:4] + struct.pack("!HHHH", *counts) + data[12:]


def with_flags(data: bytes, set_bits: int = 0, opcode: int | None = None) -> bytes:
    flags = struct.unpack_from("!H", data, 2)[0] | set_bits
    if opcode is not None:
        flags = (flags & ~OPCODE_MASK) | (opcode << 11)
    return data[:2] + struct.pack("!H", flags) + data[4:]


def question(name: bytes, qtype: int = 1, qclass: int = 1) -> bytes:
    return name + struct.pack("!HH", qtype, qclass)


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = RD) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, an, ns, ar)


def opt(payload: int = 1232, ttl: int = 0, rdata: bytes = b"", owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", TYPE_OPT, payload, ttl, len(rdata)) + rdata


def option(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


WWW = b"\x03WwW\x07Example\x03COM\x00"


def check_answer(data: bytes, answer: object, rcode: int, echoes_question: bool) -> None:
    """What every error answer owes the client, checked with dnspython."""
    assert isinstance(answer, bytes), answer
    message = dns.message.from_wire(answer)
    assert message.id == struct.unpack_from("!H", data)[0]
    query_flags = struct.unpack_from("!H", data, 2)[0]
    assert message.flags & dns.flags.QR and not message.flags & dns.flags.AA
    # RA describes recursion, which only a QUERY asks for: a NOTIMP to another opcode claims none.
    assert bool(message.flags & dns.flags.RA) == (not query_flags & OPCODE_MASK)
    assert bool(message.flags & dns.flags.RD) == bool(query_flags & RD)
    assert message.opcode() == (query_flags & OPCODE_MASK) >> 11
    assert message.rcode() == rcode
    if echoes_question:
        end = len(answer) - (11 if message.edns >= 0 else 0)  # our OPT has no options
        assert end > 12 and answer[12:end] == data[12:end]  # the question, 0x20 case kept
    else:
        assert struct.unpack_from("!H", answer, 4)[0] == 0


def both_transports(resolver: Resolver, data: bytes) -> list[bytes | Query | None]:
    return [resolver.handle(data, CLIENT, udp=True)[0], resolver.handle(data, CLIENT, udp=False)[0]]


def assert_still_serving(resolver: Resolver) -> None:
    data = make(BLOCKED, qid=77)
    answer = resolver.handle(data, CLIENT)[0]
    assert isinstance(answer, bytes)
    message = dns.message.from_wire(answer)
    assert message.id == 77 and message.answer[0][0].address == "192.0.2.10"


# -- dropped: nothing to answer, or answering would be abuse -------------------------------------


@pytest.mark.parametrize("size", range(12))
def test_truncated_header_0_to_11_octets_is_dropped(resolver: Resolver, size: int) -> None:
    """Shorter than the 12-octet header (RFC 1035 4.1.1), zero-length included: there is not even
    a whole ID and flags to answer with, so no answer (as Unbound and BIND drop them)."""
    data = make()[:size]
    with pytest.raises(ParseError) as caught:
        parse_query(data)
    assert caught.value.rcode is None
    assert both_transports(resolver, data) == [None, None]
    assert resolver.handle(data, CLIENT)[1] == metrics.DROPPED
    assert_still_serving(resolver)


@pytest.mark.parametrize(
    "data",
    [
        with_flags(make(), QR),
        with_flags(make(BLOCKED), QR),  # even for a blocked name: no block answer
        with_flags(make(use_edns=1), QR),  # QR wins over BADVERS
        with_flags(make(), QR, opcode=5),  # and over NOTIMP
        with_counts(with_flags(make(), QR), qd=0),  # and over FORMERR
        dns.message.make_response(dns.message.make_query("example.com", "A")).to_wire(),
    ],
    ids=["plain", "blocked-name", "badvers", "update", "qdcount0", "dnspython-response"],
)
def test_qr_set_is_dropped_never_answered(resolver: Resolver, data: bytes) -> None:
    """QR=1 is a response (RFC 1035 4.1.1); answering one would let a forged source address
    start an answer loop between two servers (reflection), so it is dropped before anything
    else is looked at."""
    with pytest.raises(ParseError) as caught:
        parse_query(data)
    assert caught.value.rcode is None
    assert both_transports(resolver, data) == [None, None]
    assert_still_serving(resolver)


# -- FORMERR and NOTIMP cases ---------------------------------------------------------------------

ECHO, NO_ECHO = True, False
_two_questions = with_counts(make(), qd=2) + question(b"\xc0\x0c", 28)
_record_a = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
_txt_record = b"\x00" + struct.pack("!HHIH", 16, 1, 0, 2) + b"\x01x"

# (query, rcode, question echoed, OPT in the answer, the rule). RFC 6891 7: a FORMERR caused by
# the OPT record itself MUST carry an OPT, so the client can tell it from a server without EDNS.
Case = tuple[bytes, int, bool, bool, str]
NO_OPT, OPT = False, True

CASES: dict[str, Case] = {
    # QDCOUNT (RFC 9619: a query with QDCOUNT > 1 gets FORMERR; RFC 1035 needs one question;
    # QDCOUNT 0 is only meaningful with DNS cookies, RFC 7873 5.4, which blokir does not serve).
    "qdcount-0": (with_counts(make(), qd=0), FORMERR, NO_ECHO, NO_OPT, "RFC 9619/7873 5.4"),
    "qdcount-2": (_two_questions, FORMERR, NO_ECHO, NO_OPT, "RFC 9619"),
    "qdcount-65535": (with_counts(make(), qd=0xFFFF), FORMERR, NO_ECHO, NO_OPT, "RFC 9619"),
    # Compression pointers in the question: the first name of a message has no prior occurrence
    # to point at (RFC 1035 4.1.4), so every pointer there is into the header, forward, or a loop.
    "pointer-to-header": (
        header() + question(b"\xc0\x00"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "1035 4.1.4",
    ),
    "pointer-loop-self": (
        header() + question(b"\xc0\x0c"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "1035 4.1.4",
    ),
    "pointer-loop-pair": (
        header() + question(b"\x01a\xc0\x0e") + b"\xc0\x0c",
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "RFC 1035 4.1.4",
    ),
    "pointer-forward": (
        header() + question(b"\x03www\xc0\x16") + b"\x07example\x00",
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "RFC 1035 4.1.4",
    ),
    # Labels: 0-63 octets (RFC 1035 2.3.4); 0x40-0xBF are extended label types, reserved or
    # deprecated (RFC 6891 5), 0xC0 and up pointers.
    "label-64": (
        header() + question(b"\x40" + b"a" * 64 + b"\x00"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "2.3.4",
    ),
    "label-type-0x40": (
        header() + question(b"\x41\x00\x00"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "RFC 6891 5",
    ),
    "label-type-0x80": (
        header() + question(b"\x80\x00"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "RFC 6891 5",
    ),
    "label-past-end": (header() + b"\x3fabc", FORMERR, NO_ECHO, NO_OPT, "RFC 1035 4.1.2"),
    "name-256-octets": (
        header() + question((b"\x3f" + b"a" * 63) * 4 + b"\x00"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "RFC 1035 2.3.4",
    ),
    "name-256-one-octet-labels": (
        header() + question(b"\x01a" * 128 + b"\x00"),
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "RFC 1035 2.3.4",
    ),
    "name-without-root": (header() + b"\x03www", FORMERR, NO_ECHO, NO_OPT, "RFC 1035 4.1.2"),
    "question-without-type-class": (
        header() + WWW + b"\x00",
        FORMERR,
        NO_ECHO,
        NO_OPT,
        "4.1.2",
    ),
    # Other opcodes (RFC 1035 4.1.1, RFC 6895 2.2): NOTIMP, opcode copied into the answer. The
    # message is not parsed further: its sections mean other things (UPDATE's zone section).
    "opcode-iquery": (with_flags(make(), opcode=1), NOTIMP, NO_ECHO, NO_OPT, "RFC 3425"),
    "opcode-status": (with_flags(make(), opcode=2), NOTIMP, NO_ECHO, NO_OPT, "RFC 1035 4.1.1"),
    "opcode-notify": (with_flags(make(), opcode=4), NOTIMP, NO_ECHO, NO_OPT, "RFC 1996"),
    "opcode-update": (with_flags(make(), opcode=5), NOTIMP, NO_ECHO, NO_OPT, "RFC 2136"),
    "opcode-dso": (with_flags(make(), opcode=6), NOTIMP, NO_ECHO, NO_OPT, "RFC 8490"),
    "opcode-15": (with_flags(make(), opcode=15), NOTIMP, NO_ECHO, NO_OPT, "RFC 6895 2.2"),
    # Classes: IN, CH and HS are served; the rest "not supported" (RFC 1035 4.1.1 NOTIMP).
    # QCLASS ANY would otherwise slip a blocked IN name past the per-IN block check.
    "class-0-reserved": (header() + question(WWW, 1, 0), NOTIMP, ECHO, NO_OPT, "RFC 6895 3.2"),
    "class-2-csnet": (header() + question(WWW, 1, 2), NOTIMP, ECHO, NO_OPT, "RFC 6895 3.2"),
    "class-254-none": (header() + question(WWW, 1, 254), NOTIMP, ECHO, NO_OPT, "RFC 2136 2.4"),
    "class-255-any": (header() + question(WWW, 1, 255), NOTIMP, ECHO, NO_OPT, "RFC 6895 3.2"),
    "class-any-blocked-name": (make(BLOCKED, rdclass="ANY"), NOTIMP, ECHO, NO_OPT, "6895 3.2"),
    "class-private-65280": (
        header() + question(WWW, 1, 65280),
        NOTIMP,
        ECHO,
        NO_OPT,
        "6895 3.2",
    ),
    "class-65535-reserved": (
        header() + question(WWW, 1, 65535),
        NOTIMP,
        ECHO,
        NO_OPT,
        "6895 3.2",
    ),
    # Records where a query has none: the answer and authority sections of a QUERY are empty
    # (Unbound answers FORMERR the same way); they would be forwarded upstream unchecked.
    "ancount-1": (
        header(an=1) + question(WWW) + _record_a,
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1.1",
    ),
    "nscount-1": (
        header(ns=1) + question(WWW) + _record_a,
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1.1",
    ),
    "ancount-without-records": (
        with_counts(make(), an=3),
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1",
    ),
    # Trailing bytes: not part of any counted record, and never forwarded (the upstream gets
    # the query byte for byte).
    "trailing-after-question": (make() + b"\x00", FORMERR, ECHO, NO_OPT, "RFC 1035 4.1"),
    "trailing-after-opt": (make(use_edns=0) + b"junk", FORMERR, ECHO, OPT, "RFC 1035 4.1"),
    "arcount-without-records": (
        with_counts(make(), ar=1),
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1",
    ),
    # OPT (RFC 6891 6.1.1): additional section only, at most one, owner the root.
    "opt-in-answer": (
        header(an=1) + question(WWW) + opt(),
        FORMERR,
        ECHO,
        NO_OPT,
        "6891 6.1.1",
    ),
    "opt-in-authority": (
        header(ns=1) + question(WWW) + opt(),
        FORMERR,
        ECHO,
        NO_OPT,
        "6891 6.1.1",
    ),
    "opt-two-records": (
        header(ar=2) + question(WWW) + opt() + opt(),
        FORMERR,
        ECHO,
        OPT,
        "RFC 6891 6.1.1",
    ),
    "opt-non-root-owner": (
        header(ar=1) + question(WWW) + opt(owner=b"\x03www\x00"),
        FORMERR,
        ECHO,
        OPT,
        "RFC 6891 6.1.1",
    ),
    "opt-pointer-owner": (
        header(ar=1) + question(WWW) + opt(owner=b"\xc0\x0c"),
        FORMERR,
        ECHO,
        OPT,
        "RFC 6891 6.1.1",
    ),
    "opt-rdata-past-end": (
        header(ar=1) + question(WWW) + opt(rdata=b"\x00\x0a")[:-1],
        FORMERR,
        ECHO,
        OPT,
        "RFC 6891 6.1.2",
    ),
    "opt-option-past-rdata": (
        header(ar=1) + question(WWW) + opt(rdata=struct.pack("!HH", 10, 8) + b"\x01" * 4),
        FORMERR,
        ECHO,
        OPT,
        "RFC 6891 6.1.2",
    ),
    "opt-cookie-5-octets": (
        header(ar=1) + question(WWW) + opt(rdata=option(10, b"\x01" * 5)),
        FORMERR,
        ECHO,
        OPT,
        "RFC 7873 5.2.2",
    ),
    "opt-cookie-12-octets": (
        header(ar=1) + question(WWW) + opt(rdata=option(10, b"\x01" * 12)),
        FORMERR,
        ECHO,
        OPT,
        "RFC 7873 5.2.2",
    ),
    # Other records in the additional section (a TSIG, say) are forwarded, so they must parse.
    "additional-forward-pointer": (
        header(ar=1) + question(WWW) + b"\xc0\x30" + _txt_record[1:],
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1.4",
    ),
    "additional-pointer-loop": (
        header(ar=1) + question(WWW) + b"\xc0\x21" + _txt_record[1:],  # points at itself
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1.4",
    ),
    "additional-pointer-to-header": (
        header(ar=1) + question(WWW) + b"\xc0\x02" + _txt_record[1:],
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1.4",
    ),
    "additional-rdata-past-end": (
        header(ar=1) + question(WWW) + _txt_record[:-1],
        FORMERR,
        ECHO,
        NO_OPT,
        "RFC 1035 4.1.3",
    ),
}


@pytest.mark.parametrize(("data", "rcode", "echo", "opt", "rfc"), CASES.values(), ids=CASES.keys())
def test_malformed_query_gets_the_rfc_answer(
    resolver: Resolver, data: bytes, rcode: int, echo: bool, opt: bool, rfc: str
) -> None:
    with pytest.raises(ParseError) as caught:
        parse_query(data)
    assert caught.value.rcode == rcode, (rfc, caught.value.reason)
    assert (caught.value.query is not None) == echo
    for answer in both_transports(resolver, data):
        check_answer(data, answer, rcode, echo)
        message = dns.message.from_wire(answer)  # type: ignore[arg-type]
        assert message.edns == (0 if opt else -1), rfc
    outcome = metrics.NOTIMP if rcode == NOTIMP else metrics.FORMERR
    assert resolver.handle(data, CLIENT)[1] == outcome
    assert_still_serving(resolver)


def test_formerr_answers_echo_edns_when_the_opt_parsed(resolver: Resolver) -> None:
    """RFC 6891 7: a query with a valid OPT gets one back, in error answers too (so the client
    learns our payload size); the DO bit is echoed (RFC 3225 3)."""
    data = make(use_edns=0, payload=4096, want_dnssec=True)
    data = with_counts(data, ar=2) + _txt_record[:-1]  # a second, truncated record
    with pytest.raises(ParseError) as caught:
        parse_query(data)
    assert caught.value.rcode == FORMERR
    answer = resolver.handle(data, CLIENT)[0]
    assert isinstance(answer, bytes)
    message = dns.message.from_wire(answer)
    assert message.rcode() == dns.rcode.FORMERR
    assert message.edns == 0 and message.payload == 1232 and message.flags & dns.flags.QR
    assert message.ednsflags & dns.flags.DO


@pytest.mark.parametrize("version", [1, 255])
def test_edns_version_above_0_gets_badvers_with_our_opt(resolver: Resolver, version: int) -> None:
    """RFC 6891 6.1.3: BADVERS (16, extended RCODE: 1 in the OPT TTL's high octet, 0 in the
    header) and our OPT with version 0, for every version we do not speak."""
    data = make(BLOCKED, use_edns=version)
    with pytest.raises(ParseError) as caught:
        parse_query(data)
    assert caught.value.rcode == BADVERS
    for answer in both_transports(resolver, data):
        assert isinstance(answer, bytes)
        message = dns.message.from_wire(answer)
        assert message.rcode() == dns.rcode.BADVERS and message.edns == 0
        assert answer[3] & 0x0F == 0  # the low 4 bits of 16
        assert not message.answer  # a blocked name gets no block answer in another version
    assert_still_serving(resolver)


# -- what must still be accepted (strictness must not reject real clients) ------------------------


def tsig_signed() -> bytes:
    message = dns.message.make_query("www.example.com", "A", use_edns=0)
    message.use_tsig(dns.tsigkeyring.from_text({"k.example.": "c2VjcmV0c2VjcmV0"}), "k.example.")
    message.id = 0x1234
    return message.to_wire()


ACCEPTED: dict[str, bytes] = {
    "name-255-octets": make("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61),
    "name-127-labels": make(".".join(["x"] * 127)),
    "root": make(".", "NS"),
    "class-ch": make("version.bind", "TXT", rdclass="CH"),
    "class-hs": make("example.com", "TXT", rdclass="HS"),
    "cookie-client": make(use_edns=0, options=[dns.edns.GenericOption(10, b"\x01" * 8)]),
    "cookie-client-server": make(use_edns=0, options=[dns.edns.GenericOption(10, b"\x01" * 24)]),
    "padding-and-ecs": make(
        use_edns=0,
        options=[dns.edns.GenericOption(12, b"\x00" * 30), dns.edns.ECSOption("192.0.2.0", 24)],
    ),
    "opt-after-tsig-like-record": header(ar=2) + question(WWW) + _txt_record + opt(),
    "additional-backward-pointer": header(ar=1) + question(WWW) + b"\xc0\x0c" + _txt_record[1:],
    "tsig-signed": tsig_signed(),
    "payload-below-512": make(use_edns=0, payload=100),
    "z-bit-set": with_flags(make(), 0x0040),  # RFC 1035: "must be zero", RFC 6895: ignored
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_unusual_but_valid_queries_are_accepted(resolver: Resolver, data: bytes) -> None:
    query = parse_query(data)
    assert query.id == 0x1234 and query.question == data[12 : query.question_end]
    for result in both_transports(resolver, data):
        assert isinstance(result, Query)  # a miss: forwarded as it came


def test_edns_payload_below_512_counts_as_512() -> None:
    """RFC 6891 6.2.5."""
    assert parse_query(ACCEPTED["payload-below-512"]).payload == 512


# -- answers are built right for odd but valid shapes ---------------------------------------------


def test_notimp_copies_opcode_and_flags(resolver: Resolver) -> None:
    """RFC 1035 4.1.1: OPCODE "is set by the originator of a query and copied into the
    response"; so are ID and RD. CD copied too (RFC 4035 3.2.2)."""
    data = with_flags(make(), CD, opcode=4)
    answer = resolver.handle(data, CLIENT)[0]
    assert isinstance(answer, bytes)
    message = dns.message.from_wire(answer)
    assert message.opcode() == dns.opcode.NOTIFY and message.rcode() == dns.rcode.NOTIMP
    assert message.flags & dns.flags.CD and message.flags & dns.flags.RD


def test_blocked_name_with_dotted_label_is_not_blocked_as_another_name(resolver: Resolver) -> None:
    """A single label "judi-contoh.example" (RFC 4343 allows a dot inside a label) is not the
    two-label blocked name, and must not be matched, or answered, as it."""
    data = dns.message.make_query(dns.name.Name([BLOCKED.encode(), b""]), "A").to_wire()
    assert parse_query(data).unmatchable
    assert isinstance(resolver.handle(data, CLIENT)[0], Query)


def test_all_malformed_cases_in_a_row_then_normal_service(resolver: Resolver) -> None:
    """One resolver, every case back to back over UDP (with the answer memo in play), then
    repeated: same answers, no state corrupted, and a normal query still answered."""
    first = [resolver.handle(data, CLIENT)[0] for data, *_ in CASES.values()]
    second = [resolver.handle(data, CLIENT)[0] for data, *_ in CASES.values()]
    assert first == second
    assert all(isinstance(answer, bytes) for answer in first)
    assert_still_serving(resolver)


@pytest.mark.parametrize("cut", range(12, len(make(use_edns=0))))
def test_every_truncation_of_an_edns_query_is_formerr(resolver: Resolver, cut: int) -> None:
    """A query cut anywhere after its header is FORMERR (the counts promise more than is there),
    never an exception and never a forward of a partial query."""
    data = make(use_edns=0)[:cut]
    with pytest.raises(ParseError) as caught:
        parse_query(data)
    assert caught.value.rcode == FORMERR
    for answer in both_transports(resolver, data):
        assert isinstance(answer, bytes)
        assert dns.message.from_wire(answer).rcode() == dns.rcode.FORMERR


def test_answer_record_from_a_response_cannot_ride_in_a_query() -> None:
    """A client copying an answer record into its query (ANCOUNT 1) is refused, not forwarded:
    records no one checked never reach the upstream (RFC 1035 4.1.1)."""
    query = dns.message.make_query("www.example.com", "A")
    query.answer.append(dns.rrset.from_text("www.example.com.", 60, "IN", "A", "192.0.2.66"))
    with pytest.raises(ParseError) as caught:
        parse_query(query.to_wire())
    assert caught.value.rcode == FORMERR


def test_label_with_a_dot_cannot_poison_the_cache_entry_of_the_dotted_name(
    resolver: Resolver,
) -> None:
    """["www.victim", "example"] (two labels, RFC 4343 allows "." in a label) is not
    www.victim.example. If both shared a cache key, the upstream's NXDOMAIN for the odd name
    would be served to everyone asking for the real one: any client could take any name down
    for the negative TTL. The odd name's qname is escaped (RFC 1035 5.1), so the keys differ."""
    odd = dns.message.make_query(dns.name.Name([b"www.victim", b"example", b""]), "A")
    odd_query = parse_query(odd.to_wire())
    assert odd_query.unmatchable and odd_query.qname == b"www\\.victim.example"
    nxdomain = dns.message.make_response(odd)
    nxdomain.set_rcode(dns.rcode.NXDOMAIN)
    nxdomain.authority.append(
        dns.rrset.from_text("example.", 300, "IN", "SOA", "ns.example. h.example. 1 2 3 4 300")
    )
    assert resolver.cache.put(resolver._cache_key(odd_query), nxdomain.to_wire())
    real = resolver.handle(make("www.victim.example"), CLIENT)[0]
    assert isinstance(real, Query)  # a miss, forwarded: not the odd name's NXDOMAIN
    # Backslashes are escaped too, so an odd name cannot imitate another odd name's escapes.
    slash = parse_query(make_name([b"www\\", b"victim", b"example"]))
    assert slash.unmatchable and slash.qname != odd_query.qname


def make_name(labels: list[bytes]) -> bytes:
    return dns.message.make_query(dns.name.Name([*labels, b""]), "A").to_wire()
