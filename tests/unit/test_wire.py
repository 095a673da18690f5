"""resolver.dns.query and .response: query parsing from bytes, error responses, truncation.
Checked against dnspython."""

from __future__ import annotations

import contextlib
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.dns.constants import BADVERS, FORMERR, MAX_NAME_WIRE, NOERROR, NOTIMP, REFUSED
from resolver.dns.query import ParseError, _dotted_name, parse_query
from resolver.dns.response import ede_option, error_response, opt_record, truncated


def make_query(name: str = "WwW.Example.COM", rdtype: str = "A", **kw: object) -> bytes:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    query.id = 0x1234
    return query.to_wire()


def test_parse_plain_query_keeps_case_in_question_and_lowers_qname() -> None:
    data = make_query()
    query = parse_query(data)
    assert query.id == 0x1234
    assert query.qname == b"www.example.com"
    assert query.qtype == 1 and query.qclass == 1
    assert query.question == data[12 : query.question_end]
    assert b"WwW" in query.question  # 0x20 case intact for the echo
    assert not query.edns and query.payload == 512 and not query.unmatchable


def test_parse_edns_payload_and_do() -> None:
    query = parse_query(make_query(use_edns=0, payload=4096, want_dnssec=True))
    assert query.edns and query.do and query.payload == 4096
    small = parse_query(make_query(use_edns=0, payload=100))
    assert small.payload == 512  # RFC 6891 6.2.5: values below 512 are treated as 512


def test_root_and_label_with_dot() -> None:
    assert parse_query(make_query(".", "NS")).qname == b""
    odd = dns.message.make_query(dns.name.Name([b"a.b", b"example", b"com", b""]), "A")
    query = parse_query(odd.to_wire())
    assert query.unmatchable  # "a.b" as one label must not alias a.b.example.com


@pytest.mark.parametrize(
    ("mutate", "rcode"),
    [
        (lambda d: d[:11], None),  # shorter than a header: drop
        (lambda d: d[:2] + bytes([d[2] | 0x80]) + d[3:], None),  # QR=1: drop
        (lambda d: d[:2] + bytes([d[2] | (2 << 3)]) + d[3:], NOTIMP),  # opcode STATUS
        (lambda d: d[:4] + b"\x00\x02" + d[6:], FORMERR),  # QDCOUNT 2
        (lambda d: d[:4] + b"\x00\x00" + d[6:], FORMERR),  # QDCOUNT 0
        (lambda d: d[:-3], FORMERR),  # truncated question
        (lambda d: d[:12] + b"\xc0\x0c" + d[-4:], FORMERR),  # pointer in the question
        (lambda d: d[:12] + b"\x40" + b"a" * 64 + b"\x00" + d[-4:], FORMERR),  # label 64
        (lambda d: d[:12] + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + d[-4:], FORMERR),  # >255
    ],
)
def test_malformed_queries(mutate, rcode) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as caught:
        parse_query(mutate(make_query()))
    assert caught.value.rcode == rcode


def test_two_opt_records_and_bad_version() -> None:
    data = bytearray(make_query(use_edns=0))
    opt = bytes(data[-11:])
    twice = bytes(data[:10]) + b"\x00\x02" + bytes(data[12:]) + opt
    with pytest.raises(ParseError) as caught:
        parse_query(twice)
    assert caught.value.rcode == FORMERR
    with pytest.raises(ParseError) as caught:
        parse_query(make_query(use_edns=1))
    assert caught.value.rcode == BADVERS
    # BADVERS goes in the OPT record's extended RCODE (RFC 6891 6.1.3).
    response = error_response(make_query(use_edns=1), BADVERS, caught.value.query, 1232)
    parsed = dns.message.from_wire(response)
    assert parsed.rcode() == dns.rcode.BADVERS


def test_error_response_echoes_question_and_flags() -> None:
    data = make_query(use_edns=0)
    query = parse_query(data)
    response = dns.message.from_wire(error_response(data, REFUSED, query, 1232))
    assert response.id == 0x1234
    assert response.rcode() == dns.rcode.REFUSED
    assert response.flags & dns.flags.QR and response.flags & dns.flags.RD
    assert response.flags & dns.flags.RA and not response.flags & dns.flags.AA
    assert str(response.question[0].name) == "WwW.Example.COM."
    assert response.edns == 0 and response.payload == 1232


def test_ede_option_matches_dnspython() -> None:
    raw = opt_record(1232, False, 0, ede_option(16, "blocked by law"))
    data = make_query()
    header = bytearray(data[:12])
    header[2] |= 0x80
    header[10:12] = b"\x00\x01"
    message = dns.message.from_wire(bytes(header) + data[12:] + raw)
    (option,) = message.options
    assert isinstance(option, dns.edns.EDEOption)
    assert option.code == dns.edns.EDECode.CENSORED and option.text == "blocked by law"


def test_truncated_keeps_question_and_sets_tc() -> None:
    data = make_query(use_edns=0)
    query = parse_query(data)
    big = error_response(data, NOERROR, query, 1232) + b"\x00" * 2000
    small = dns.message.from_wire(truncated(big, query, 1232))
    assert small.flags & dns.flags.TC and len(small.question) == 1 and small.edns == 0


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_query(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_random_tails_after_a_valid_question(tail: bytes) -> None:
    base = make_query()
    mutated = base[:10] + struct.pack("!H", 1 + len(tail) % 3) + base[12:] + tail
    try:
        parse_query(mutated)
    except ParseError as error:
        assert error.rcode in (FORMERR, BADVERS)


def _question_packet(labels: list[bytes]) -> bytes:
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"


def test_the_one_call_name_text_agrees_with_the_label_by_label_join() -> None:
    """parse_query turns the question name into text with one translate when it can
    (_NAME_TEXT); the label-by-label join (_dotted_name) is the reference. Random
    names with long labels (45+ octets, whose length octet reads as "-" or a digit), label bytes
    below 0x2D, dots, backslashes and upper case must give the same text and verdict."""
    import random

    edge_cases = [
        ([b"back\\slash", b"example"], b"back\\\\slash.example", True),
        ([b"www.victim", b"example"], b"www\\.victim.example", True),
        ([b"Comma,Here", b"Example"], b"comma,here.example", False),
        ([b"a" * 45, b"B" * 46, b"c" * 48], b"a" * 45 + b"." + b"b" * 46 + b"." + b"c" * 48, False),
        ([b"WWW", b"Example", b"COM"], b"www.example.com", False),
    ]
    for labels, text, unmatchable in edge_cases:
        query = parse_query(_question_packet(labels))
        assert (query.qname, query.unmatchable) == (text, unmatchable), labels
    rng = random.Random(20251128)
    ordinary = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    fast = 0
    for _ in range(20_000):
        labels = []
        for _ in range(rng.randint(1, 5)):
            size = rng.choice([1, 3, 10, 44, 45, 46, 48, 57, 63, rng.randint(1, 63)])
            if rng.random() < 0.7:
                labels.append(bytes(rng.choice(ordinary) for _ in range(size)))
            else:
                labels.append(bytes(rng.randrange(256) for _ in range(size)))
        if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME_WIRE:
            continue
        packet = _question_packet(labels)
        query = parse_query(packet)
        end = len(packet) - 5
        assert (query.qname, query.unmatchable) == _dotted_name(packet, end), labels
        joined = b".".join(labels)
        fast += all(len(label) <= 44 for label in labels) and not any(
            byte < 0x2D or byte in b"\\" for byte in joined if byte != 0x2E
        )
    assert fast > 1_000  # the one-call path was taken often (about 12%), so it was tested
