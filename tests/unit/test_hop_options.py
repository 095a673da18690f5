"""EDNS options of one hop (COOKIE, ECS, NSID, TCP keepalive, padding): removed from a query
before it goes upstream (upstream_request) and from an upstream answer before it is cached
(without_options). Checked against dnspython."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.dns.message import without_options
from resolver.dns.query import HOP_BY_HOP_OPTIONS, parse_query, upstream_request

UNKNOWN = 65001


def _query(options: list[dns.edns.Option], **kw: object) -> bytes:
    """A query with the header flags blokir sends upstream (RD and AD, upstream_request),
    so that what these tests compare is the options."""
    query = dns.message.make_query(
        "Www.Example.com", "A", use_edns=0, payload=1400, want_dnssec=True, options=options, **kw
    )  # type: ignore[arg-type]
    query.id = 0x4242
    query.flags |= dns.flags.AD
    return query.to_wire()


ALL_HOP = [
    dns.edns.NSIDOption(b""),
    dns.edns.ECSOption("192.0.2.0", 24),
    dns.edns.CookieOption(b"cookie-1", b""),
    dns.edns.GenericOption(11, b""),  # TCP keepalive (RFC 7828)
    dns.edns.GenericOption(12, b"\0" * 5),  # padding (RFC 7830)
]


def test_hop_options_are_removed_and_the_rest_kept_byte_for_byte() -> None:
    kept = dns.edns.GenericOption(UNKNOWN, b"keep me")
    data = _query([ALL_HOP[0], ALL_HOP[1], kept, *ALL_HOP[2:]])
    query = parse_query(data)
    sent = upstream_request(data, query)
    parsed = dns.message.from_wire(sent)
    assert [(int(o.otype), o.to_wire()) for o in parsed.options] == [(UNKNOWN, b"keep me")]
    assert parsed.payload == 1400 and parsed.ednsflags & dns.flags.DO
    assert parsed.id == 0x4242 and parsed.flags == dns.message.from_wire(data).flags
    assert sent[: query.question_end] == data[: query.question_end]  # header, 0x20 question
    # What is left parses as the same query, with EDNS and DO (they key the cache).
    again = parse_query(sent)
    assert (again.qname, again.edns, again.do) == (b"www.example.com", True, True)
    assert again.payload == 1400
    assert upstream_request(sent, again) is sent


def test_only_hop_options_leaves_an_empty_opt_record() -> None:
    data = _query(ALL_HOP)
    sent = upstream_request(data, parse_query(data))
    parsed = dns.message.from_wire(sent)
    assert parsed.edns == 0 and parsed.options == ()
    assert sent.endswith(b"\x00\x00")  # RDLENGTH 0
    assert len(sent) == len(_query([]))


@pytest.mark.parametrize(
    "options",
    [[], [dns.edns.GenericOption(UNKNOWN, b"x")], [dns.edns.EDEOption(dns.edns.EDECode.OTHER)]],
)
def test_queries_without_hop_options_go_as_they_came(options: list[dns.edns.Option]) -> None:
    data = _query(options)
    assert upstream_request(data, parse_query(data)) is data


def test_no_edns_goes_as_it_came() -> None:
    query = dns.message.make_query("example.com", "A", use_edns=False)
    query.flags |= dns.flags.AD
    data = query.to_wire()
    assert upstream_request(data, parse_query(data)) is data


def test_a_signed_query_is_not_touched() -> None:
    """A TSIG follows the OPT record and signs it (RFC 8945 4.3.3): removing an option would
    break the signature, so a signed query keeps its options."""
    keyring = dns.tsigkeyring.from_text({"k.": ("hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0")})
    query = dns.message.make_query(
        "example.com", "A", use_edns=0, options=[dns.edns.CookieOption(b"cookie-1", b"")]
    )
    query.use_tsig(keyring, keyname="k.")
    data = query.to_wire()
    assert upstream_request(data, parse_query(data)) is data


def _response(options: list[dns.edns.Option], edns: bool = True) -> bytes:
    query = dns.message.make_query("www.example.com", "A", use_edns=0 if edns else False)
    query.id = 0x4343
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    if edns:
        response.use_edns(0, payload=1232, options=options)
    return response.to_wire()


def test_upstream_answers_lose_hop_options_and_keep_the_rest() -> None:
    ede = dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER, "upstream said")
    data = _response([dns.edns.CookieOption(b"cookie-1", b"server-1"), ede, *ALL_HOP[:2]])
    cleaned = without_options(data, HOP_BY_HOP_OPTIONS)
    parsed = dns.message.from_wire(cleaned)
    assert parsed.options == (ede,)
    assert parsed.answer == dns.message.from_wire(data).answer
    assert parsed.payload == 1232


@pytest.mark.parametrize(
    "data",
    [
        _response([]),
        _response([dns.edns.EDEOption(dns.edns.EDECode.OTHER)]),
        _response([], edns=False),
        b"\x12\x34\x81\x80",  # malformed: left to the cache, which refuses it
    ],
)
def test_answers_without_hop_options_are_returned_as_they_came(data: bytes) -> None:
    assert without_options(data, HOP_BY_HOP_OPTIONS) is data


def test_an_opt_typed_record_outside_the_additional_section_is_left_alone() -> None:
    """Only the additional section holds the OPT pseudo-record (RFC 6891 6.1.1): a record of
    type 41 in the answer section is data, however much it looks like options."""
    question = dns.message.make_query("www.example.com", "A").to_wire()[12:]
    cookie = struct.pack("!HH", 10, 8) + b"cookie-1"
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 41, 1232, 0, len(cookie)) + cookie
    ede = struct.pack("!HHH", 15, 2, 0)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(ede)) + ede
    data = struct.pack("!HHHHHH", 0x4242, 0x8180, 1, 1, 0, 1) + question + answer + opt
    assert without_options(data, HOP_BY_HOP_OPTIONS) is data


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([3, 5, 8, 9, 11, 12, 13, 14, 15, 65001]), st.binary(max_size=12)),
        max_size=6,
    )
)
def test_any_mix_of_options_keeps_exactly_the_others_in_order(
    options: list[tuple[int, bytes]],
) -> None:
    """Random option lists (COOKIE aside: its lengths are checked, see test_wire): what goes
    upstream is the query the client would have sent without the hop options, byte for byte;
    the same for an upstream answer."""
    others = [(code, value) for code, value in options if code not in HOP_BY_HOP_OPTIONS]
    data = _query([dns.edns.GenericOption(code, value) for code, value in options])
    sent = upstream_request(data, parse_query(data))
    assert sent == _query([dns.edns.GenericOption(code, value) for code, value in others])
    assert parse_query(sent).hop_options == 0
    cleaned = without_options(_response_with(options), HOP_BY_HOP_OPTIONS)
    assert cleaned == _response_with(others)


def _response_with(options: list[tuple[int, bytes]]) -> bytes:
    return _response([dns.edns.GenericOption(code, value) for code, value in options])
