"""The DNS message walker: golden packets from dnspython, CNAME/DNAME, SOA, malformed input."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.dns.message import ADDITIONAL, ANSWER, AUTHORITY, cname_targets, negative_ttl, walk
from resolver.dns.names import MessageError, read_name, skip_name

SOA = "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300"


def _response(
    qname: str = "www.example.com.",
    rdtype: str = "A",
    answer: Sequence[tuple[str, int, str, str]] = (),
    authority: Sequence[tuple[str, int, str, str]] = (),
    additional: Sequence[tuple[str, int, str, str]] = (),
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    edns: bool = True,
) -> bytes:
    query = dns.message.make_query(qname, rdtype, use_edns=edns)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    for section, rows in (
        (response.answer, answer),
        (response.authority, authority),
        (response.additional, additional),
    ):
        for name, ttl, rtype, text in rows:
            section.append(dns.rrset.from_text(name, ttl, "IN", rtype, text))
    return response.to_wire()


def _name_wire(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def _header(qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, 0x8180, qd, an, ns, ar)


# -- names ---------------------------------------------------------------------------------


def test_read_name_lowercases_and_drops_the_trailing_dot() -> None:
    wire = dns.message.make_query("WWW.Example.COM.", "A").to_wire()
    name, end = read_name(wire, 12)
    assert name == b"www.example.com"
    assert end == 12 + len(_name_wire(b"www", b"example", b"com"))
    assert skip_name(wire, 12) == end


def test_root_name_is_empty() -> None:
    msg = _header(qd=1) + b"\x00" + b"\x00\x02\x00\x01"
    assert read_name(msg, 12) == (b"", 13)


def test_compressed_names_read_like_dnspython() -> None:
    wire = _response(
        answer=[
            ("www.example.com.", 300, "CNAME", "a.b.Example.com."),
            ("a.b.example.com.", 60, "A", "192.0.2.1"),
        ],
        authority=[("example.com.", 3600, "NS", "ns1.example.com.")],
        additional=[("ns1.example.com.", 3600, "A", "192.0.2.53")],
    )
    parsed = dns.message.from_wire(wire)
    _, records = walk(wire)
    owners = [read_name(wire, r.name_offset)[0] for r in records if r.rtype != 41]
    expected = [
        rrset.name.to_text(omit_final_dot=True).lower().encode()
        for section in (parsed.answer, parsed.authority, parsed.additional)
        for rrset in section
        for _ in rrset
    ]
    assert owners == expected
    assert any(wire[r.name_offset] & 0xC0 == 0xC0 for r in records)  # compression was used


def test_escaping_does_not_alias() -> None:
    dotted = _name_wire(b"a.b", b"com")  # one label holding a dot
    plain = _name_wire(b"a", b"b", b"com")
    backslash = _name_wire(b"a\\046b", b"com")  # the text of the escape, literally
    binary = _name_wire(b"a\x00\xff ", b"com")
    names = [read_name(_header() + wire, 12)[0] for wire in (dotted, plain, backslash, binary)]
    assert names == [b"a\\046b.com", b"a.b.com", b"a\\092046b.com", b"a\\000\\255\\032.com"]
    assert len(set(names)) == 4


def test_name_limits() -> None:
    longest = _name_wire(*[b"x" * 63] * 3 + [b"y" * 61])  # 255 octets on the wire
    assert len(longest) == 255
    assert skip_name(_header() + longest, 12) == 12 + 255
    too_long = _name_wire(*[b"x" * 63] * 3 + [b"y" * 62])
    with pytest.raises(MessageError, match="255"):
        read_name(_header() + too_long, 12)
    many = _name_wire(*[b"a"] * 127)  # 127 labels + root = 255 octets
    assert read_name(_header() + many, 12)[0] == b".".join([b"a"] * 127)
    with pytest.raises(MessageError):
        read_name(_header() + _name_wire(*[b"a"] * 128), 12)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "past the end"),
        (b"\x03ab", "past the end"),
        (b"\x03abc", "past the end"),  # no root label
        (b"\xc0", "cut off"),
        (b"\xc0\x0c", "does not point back"),  # points at itself
        (b"\xc0\x0d", "does not point back"),  # forward
        (b"\xc0\x05", "does not point back"),  # into the header
        (b"\x01a\xc0\x0c", "does not point back"),  # back to its own first label: a loop
        (b"\x41abc\x00", "label type 0x40"),
        (b"\x81abc\x00", "label type 0x80"),
    ],
)
def test_malformed_names(body: bytes, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        skip_name(_header() + body, 12)
    with pytest.raises(MessageError, match=why):
        read_name(_header() + body, 12)


def test_pointer_chain_backwards_is_fine_but_bounded() -> None:
    # name at 12, then each next name is a pointer to the previous one: a legal backward chain
    msg = bytearray(_header() + _name_wire(b"example", b"com"))
    previous = 12
    for _ in range(200):
        here = len(msg)
        msg += struct.pack("!H", 0xC000 | previous)
        previous = here
    assert read_name(bytes(msg), 12 + 13 + 2 * 10)[0] == b"example.com"
    with pytest.raises(MessageError, match="too many pointers"):
        read_name(bytes(msg), previous)


def test_two_pointers_cannot_loop() -> None:
    # a pointer at 14 to 12 and a pointer at 12 to 14: the second points forward
    msg = _header() + b"\xc0\x0e\xc0\x0c"
    with pytest.raises(MessageError):
        skip_name(msg, 14)
    with pytest.raises(MessageError):
        skip_name(msg, 12)


# -- walk ----------------------------------------------------------------------------------


def test_walk_golden_packet() -> None:
    wire = _response(
        answer=[
            ("www.example.com.", 300, "A", "192.0.2.1"),
            ("www.example.com.", 300, "A", "192.0.2.2"),
        ],
        authority=[("example.com.", 3600, "NS", "ns1.example.com.")],
        additional=[("ns1.example.com.", 1800, "AAAA", "2001:db8::53")],
    )
    question_end, records = walk(wire)
    assert question_end == 12 + len(_name_wire(b"www", b"example", b"com")) + 4
    assert [(r.section, r.rtype, r.ttl) for r in records] == [
        (ANSWER, 1, 300),
        (ANSWER, 1, 300),
        (AUTHORITY, 2, 3600),
        (ADDITIONAL, 28, 1800),
        (ADDITIONAL, 41, 0),
    ]
    for record in records:
        assert struct.unpack_from("!I", wire, record.ttl_offset)[0] == record.ttl
        assert struct.unpack_from("!H", wire, record.rdata_offset - 2)[0] == record.rdlength
        assert record.rclass == 1 or record.rtype == 41  # OPT's CLASS is the UDP payload size
    a = records[0]
    assert wire[a.rdata_offset : a.rdata_offset + a.rdlength] == bytes([192, 0, 2, 1])
    assert records[-1].rdata_offset + records[-1].rdlength == len(wire)


def test_walk_rejects_bad_counts_truncation_and_trailing_bytes() -> None:
    wire = _response(answer=[("www.example.com.", 300, "A", "192.0.2.1")], edns=False)
    walk(wire)
    with pytest.raises(MessageError, match="shorter than"):
        walk(wire[:11])
    for cut in range(12, len(wire)):
        with pytest.raises(MessageError):
            walk(wire[:cut])
    with pytest.raises(MessageError, match="after the last record"):
        walk(wire + b"\x00")
    huge = bytearray(wire)
    huge[6:8] = b"\xff\xff"
    with pytest.raises(MessageError, match="counts"):
        walk(bytes(huge))
    # rdlength pointing past the end
    _, records = walk(wire)
    bad = bytearray(wire)
    struct.pack_into("!H", bad, records[0].rdata_offset - 2, 5)
    with pytest.raises(MessageError, match="rdata"):
        walk(bytes(bad))


# -- CNAME / DNAME -------------------------------------------------------------------------


def test_cname_chain_and_dname_targets() -> None:
    wire = _response(
        qname="www.Shop.example.",
        answer=[
            ("shop.example.", 300, "DNAME", "shop.Example.NET."),
            ("www.shop.example.", 300, "CNAME", "www.shop.example.net."),
            ("www.shop.example.net.", 300, "CNAME", "edge.cdn.test."),
            ("edge.cdn.test.", 20, "A", "192.0.2.7"),
        ],
        authority=[("cdn.test.", 300, "NS", "ns.cdn.test.")],
    )
    assert cname_targets(wire) == [b"shop.example.net", b"www.shop.example.net", b"edge.cdn.test"]


def test_cname_targets_only_from_the_answer_section() -> None:
    wire = _response(
        answer=[("www.example.com.", 300, "A", "192.0.2.1")],
        additional=[("x.example.com.", 300, "CNAME", "blocked.test.")],
    )
    assert cname_targets(wire) == []
    assert cname_targets(_response(rcode=dns.rcode.NXDOMAIN)) == []


def test_cname_rdata_must_be_exactly_the_name() -> None:
    wire = _response(answer=[("www.example.com.", 300, "CNAME", "target.test.")], edns=False)
    _, (record,) = walk(wire)
    longer = bytearray(wire)
    struct.pack_into("!H", longer, record.rdata_offset - 2, record.rdlength + 1)
    longer += b"\x00"
    with pytest.raises(MessageError, match="RDATA"):
        cname_targets(bytes(longer))


# -- negative TTL --------------------------------------------------------------------------


def test_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    nx = _response(rcode=dns.rcode.NXDOMAIN, authority=[("example.com.", 900, "SOA", SOA)])
    assert negative_ttl(nx) == 300  # MINIMUM is smaller
    nodata = _response(authority=[("example.com.", 60, "SOA", SOA)])
    assert negative_ttl(nodata) == 60  # the SOA's own TTL is smaller
    assert negative_ttl(nodata, walk(nodata)[1]) == 60


def test_negative_ttl_none_without_soa_or_for_other_rcodes() -> None:
    assert negative_ttl(_response(rcode=dns.rcode.NXDOMAIN)) is None
    referral = _response(authority=[("example.com.", 3600, "NS", "ns1.example.com.")])
    assert negative_ttl(referral) is None
    servfail = _response(rcode=dns.rcode.SERVFAIL, authority=[("example.com.", 900, "SOA", SOA)])
    assert negative_ttl(servfail) is None
    soa_in_answer = _response(rdtype="SOA", answer=[("www.example.com.", 900, "SOA", SOA)])
    assert negative_ttl(soa_in_answer) is None


def test_negative_ttl_top_bit_means_zero() -> None:
    wire = bytearray(
        _response(rcode=dns.rcode.NXDOMAIN, authority=[("example.com.", 900, "SOA", SOA)])
    )
    _, records = walk(bytes(wire))
    struct.pack_into("!I", wire, records[0].ttl_offset, 0x80000000)
    assert negative_ttl(bytes(wire)) == 0


def test_negative_ttl_malformed_soa() -> None:
    wire = bytearray(
        _response(
            rcode=dns.rcode.NXDOMAIN, authority=[("example.com.", 900, "SOA", SOA)], edns=False
        )
    )
    _, (soa,) = walk(bytes(wire))
    struct.pack_into("!H", wire, soa.rdata_offset - 2, soa.rdlength - 1)
    with pytest.raises(MessageError):
        negative_ttl(bytes(wire[:-1]))


# -- never anything but MessageError --------------------------------------------------------


def _all_functions(msg: bytes) -> None:
    try:
        _, records = walk(msg)
    except MessageError:
        pass
    else:  # a message that walks has owner names that read
        for record in records:
            read_name(msg, record.name_offset)
    for call in (walk, cname_targets, negative_ttl):
        with contextlib.suppress(MessageError):
            call(msg)
    for offset in range(0, min(len(msg), 40)):
        for call2 in (skip_name, read_name):
            with contextlib.suppress(MessageError):
                call2(msg, offset)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_message_error(data: bytes) -> None:
    _all_functions(data)


GOLDEN = _response(
    answer=[
        ("www.example.com.", 300, "CNAME", "a.example.net."),
        ("a.example.net.", 60, "A", "192.0.2.1"),
    ],
    authority=[("example.net.", 900, "SOA", SOA)],
    additional=[("ns1.example.com.", 3600, "A", "192.0.2.53")],
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOLDEN) - 1), st.integers(0, 255)), max_size=6))
def test_mutated_golden_packets_raise_only_message_error(edits: list[tuple[int, int]]) -> None:
    msg = bytearray(GOLDEN)
    for offset, value in edits:
        msg[offset] = value
    _all_functions(bytes(msg))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOLDEN)))
def test_truncated_golden_packets_raise_only_message_error(cut: int) -> None:
    _all_functions(GOLDEN[:cut])


def test_names_agree_with_dnspython_on_mutated_packets() -> None:
    """Where dnspython reads a packet, our names and counts agree with it."""
    import random

    rng = random.Random(5)
    checked = 0
    for _ in range(3000):
        msg = bytearray(GOLDEN)
        for _ in range(rng.randint(1, 3)):
            msg[rng.randrange(len(msg))] = rng.randrange(256)
        try:
            parsed = dns.message.from_wire(bytes(msg))
        except Exception:
            continue
        try:
            _, records = walk(bytes(msg))
        except MessageError:
            continue  # stricter than dnspython is fine (e.g. pointers into the header)
        checked += 1
        total = sum(
            len(rrset) for s in (parsed.answer, parsed.authority, parsed.additional) for rrset in s
        )
        total += 1 if parsed.opt is not None else 0
        assert len(records) == total
        qname = parsed.question[0].name if parsed.question else None
        if qname is not None and all(b"." not in label for label in qname.labels):
            text = qname.to_text(omit_final_dot=True)
            if text.isascii() and "\\" not in text:
                assert read_name(bytes(msg), 12)[0] == (
                    b"" if text == "." else text.lower().encode()
                )
    assert checked > 100
