"""Property tests for hostile input: parse_query and Resolver.handle on arbitrary bytes and
on packets that are structured but wrong (lying counts and lengths, odd labels, bad OPT records,
extra records, trailing bytes). tests/fuzz/ runs the same invariants for a million inputs;
these keep a few hundred examples per property so the file takes seconds.

Invariants: nothing raises but ParseError; a packet with QR=1 or shorter than a header is
never answered; every answer parses with dnspython and carries the query's ID, QR=1 and, when
it has a question, the query's question bytes; and whatever parse_query accepts, dnspython reads
the same way (differential check against an independent parser).
"""

from __future__ import annotations

import struct
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver import metrics
from resolver.dns.constants import BADVERS, FORMERR, NOTIMP
from resolver.dns.query import ParseError, Query, parse_query
from resolver.dns.response import error_response
from resolver.pipeline import Resolver
from tests.unit.resolvers import make_resolver

PROPERTY = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BLOCKED = b"judi-contoh.example"


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    tmp_path = tmp_path_factory.mktemp("fuzz-properties")
    return make_resolver(tmp_path, [BLOCKED.decode()])


def check_handle(resolver: Resolver, data: bytes, udp: bool) -> None:
    result = resolver.handle(data, "127.0.0.1", udp=udp)[0]
    if result is None:
        return
    assert len(data) >= 12 and not data[2] & 0x80, "answered a short packet or a response"
    if isinstance(result, Query):
        assert result.id == struct.unpack_from("!H", data)[0]
        assert result.question == data[12 : result.question_end]
        return
    assert isinstance(result, bytes)
    message = dns.message.from_wire(result)
    assert message.id == struct.unpack_from("!H", data)[0]
    assert message.flags & dns.flags.QR
    if message.question:
        end = 12 + len(message.question[0].name.to_wire()) + 4
        assert result[12:end] == data[12:end]
    if udp and len(result) > 512:  # only a parsed query's answer may be larger
        assert len(result) <= resolver.udp_limit(parse_query(data))


def check_parse(data: bytes) -> Query | None:
    try:
        return parse_query(data)
    except ParseError as error:
        if error.rcode is None:
            assert len(data) < 12 or data[2] & 0x80
        else:
            assert error.rcode in (FORMERR, NOTIMP, BADVERS)
            answer = error_response(data, error.rcode, error.query, 1232)
            assert dns.message.from_wire(answer).rcode() == error.rcode
        return None


def agrees_with_dnspython(data: bytes, query: Query) -> None:
    """Whatever blokir accepts, an independent parser reads the same way: header and question
    always; the OPT record too when dnspython can read the whole message (it also checks the
    RDATA of other records, a TSIG's or an ECS option's, which blokir forwards unread and the
    upstream judges)."""
    header = dns.message.from_wire(data, question_only=True)
    assert header.opcode() == dns.opcode.QUERY and not header.flags & dns.flags.QR
    (rrset,) = header.question
    assert rrset.rdtype == query.qtype and rrset.rdclass == query.qclass
    assert rrset.rdclass in (dns.rdataclass.IN, dns.rdataclass.CH, dns.rdataclass.HS)
    if not query.unmatchable:
        assert b".".join(rrset.name.labels[:-1]).lower() == query.qname
    try:
        message = dns.message.from_wire(data)
    except dns.exception.FormError:
        return
    assert not message.answer and not message.authority
    assert (message.edns >= 0) == query.edns
    if query.edns:
        assert message.edns == 0
        assert query.payload == max(message.payload, 512)
        assert query.do == bool(message.ednsflags & dns.flags.DO)


# -- arbitrary bytes -----------------------------------------------------------------------------


@PROPERTY
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes(resolver: Resolver, data: bytes) -> None:
    query = check_parse(data)
    if query is not None:
        agrees_with_dnspython(data, query)
    check_handle(resolver, data, udp=True)
    check_handle(resolver, data, udp=False)


@PROPERTY
@given(data=st.binary(min_size=12, max_size=300), flags=st.integers(0, 0xFFFF))
def test_arbitrary_bytes_behind_a_plausible_header(
    resolver: Resolver, data: bytes, flags: int
) -> None:
    """A header that says "one question" with the random rest, so parsing gets past the counts."""
    packet = data[:2] + struct.pack("!HHHHH", flags & ~0x8000, 1, 0, 0, data[2] % 3) + data[12:]
    query = check_parse(packet)
    if query is not None:
        agrees_with_dnspython(packet, query)
    check_handle(resolver, packet, udp=True)


# -- structured but wrong ------------------------------------------------------------------------

labels = st.lists(
    st.one_of(
        st.sampled_from([b"www", b"judi-contoh", b"example", b"a.b", b"x\\y", b"WwW", b""]),
        st.binary(max_size=70),
    ),
    max_size=8,
)


@st.composite
def names(draw: st.DrawFn) -> bytes:
    """A wire name with true or lying label lengths, compression pointers, odd label types."""
    parts = []
    for label in draw(labels):
        if not label:
            continue
        length = draw(st.one_of(st.just(len(label)), st.integers(0, 255)))
        parts.append(bytes([length]) + label)
    tail = draw(
        st.sampled_from([b"\x00", b"\x00", b"\x00", b"\xc0\x0c", b"\xc0\xff", b"\x40", b""])
    )
    return b"".join(parts) + tail


@st.composite
def opt_records(draw: st.DrawFn) -> bytes:
    owner = draw(st.sampled_from([b"\x00", b"\x00", b"\x00", b"\x01a\x00", b"\xc0\x0c"]))
    payload = draw(st.sampled_from([0, 100, 512, 1232, 4096, 65535]))
    version = draw(st.sampled_from([0, 0, 0, 1]))
    do = draw(st.booleans())
    options = b""
    for code, value in draw(
        st.lists(
            st.tuples(st.sampled_from([8, 10, 12, 15, 65001]), st.binary(max_size=44)),
            max_size=3,
        )
    ):
        length = draw(st.one_of(st.just(len(value)), st.integers(0, 60)))
        options += struct.pack("!HH", code, length) + value
    rdlength = draw(st.one_of(st.just(len(options)), st.integers(0, 80)))
    ttl = (version << 16) | (0x8000 if do else 0)
    return owner + struct.pack("!HHIH", 41, payload, ttl, rdlength) + options


other_records = st.builds(
    lambda owner, rtype, rdata: owner + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata,
    st.sampled_from([b"\x00", b"\xc0\x0c", b"\xc0\x30", b"\x03key\x00"]),
    st.sampled_from([1, 16, 250]),
    st.binary(max_size=20),
)


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    qid = draw(st.integers(0, 0xFFFF))
    flags = draw(st.sampled_from([0x0100, 0x0100, 0x0110, 0x0000, 0x0300, 0x0140]))
    flags |= draw(st.sampled_from([0, 0, 0, 0, 0x8000, 1 << 11, 5 << 11]))
    question = draw(names()) + struct.pack(
        "!HH",
        draw(st.sampled_from([1, 28, 255, 65, 41, 0])),
        draw(st.sampled_from([1, 1, 1, 3, 4, 255, 254, 0])),
    )
    additional = draw(st.lists(st.one_of(opt_records(), other_records), max_size=3))
    counts = [1, 0, 0, len(additional)]
    if draw(st.integers(0, 4)) == 0:  # lie about one count
        counts[draw(st.integers(0, 3))] = draw(st.integers(0, 4))
    trailing = draw(st.sampled_from([b"", b"", b"", b"\x00", b"junk"]))
    return struct.pack("!HH4H", qid, flags, *counts) + question + b"".join(additional) + trailing


@PROPERTY
@given(packet=packets())
def test_structured_but_wrong_packets(resolver: Resolver, packet: bytes) -> None:
    query = check_parse(packet)
    if query is not None:
        agrees_with_dnspython(packet, query)
    check_handle(resolver, packet, udp=True)
    check_handle(resolver, packet, udp=False)


@PROPERTY
@given(
    name=st.lists(st.from_regex(rb"\A[a-zA-Z0-9-]{1,20}\Z"), min_size=1, max_size=5),
    rdtype=st.sampled_from(["A", "AAAA", "ANY", "TXT", "HTTPS"]),
    edns=st.sampled_from([-1, 0]),
    payload=st.sampled_from([512, 1232, 4096]),
    do=st.booleans(),
)
def test_well_formed_queries_are_always_accepted(
    name: list[bytes], rdtype: str, edns: int, payload: int, do: bool
) -> None:
    """The converse: strictness never rejects what a real stub (here dnspython) sends."""
    data = dns.message.make_query(
        dns.name.Name([*name, b""]), rdtype, use_edns=edns, payload=payload, want_dnssec=do
    ).to_wire()
    query = parse_query(data)
    agrees_with_dnspython(data, query)


def test_the_differential_check_is_not_vacuous() -> None:
    """It catches a disagreement (guards against an oracle that accepts everything)."""
    data = dns.message.make_query("www.example.com", "A", use_edns=0).to_wire()
    for field, value in (("qtype", 28), ("qclass", 3), ("qname", b"www.example.org"),
                         ("do", True), ("payload", 4096)):  # fmt: skip
        query = parse_query(data)
        setattr(query, field, value)  # pretend we misread it
        with pytest.raises(AssertionError):
            agrees_with_dnspython(data, query)


# -- the fuzz campaign's harness (tests/fuzz/) is not vacuous ------------------------------------


def test_fuzz_harness_reports_an_injected_reflection_bug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A handler that answered QR=1 packets (a reflection loop) must show up as crashes with
    their inputs saved; the real handler gives none on the same inputs."""
    from tests.fuzz import campaign

    clean = campaign.run_builtin("handle_udp", 1500, 3, tmp_path / "clean")
    assert clean.inputs == 1500 and clean.crashes == 0

    handle = Resolver.handle

    def reflecting(self: Resolver, data: bytes, client: str, udp: bool = True) -> object:
        if len(data) >= 12 and data[2] & 0x80:
            return data, metrics.ALLOWED
        return handle(self, data, client, udp)

    monkeypatch.setattr(Resolver, "handle", reflecting)
    buggy = campaign.run_builtin("handle_udp", 1500, 3, tmp_path / "buggy")
    assert buggy.crashes > 0
    assert list(buggy.signatures) == [
        "invariant: answered a packet shorter than a header or with QR=1"
    ]
    assert list((tmp_path / "buggy").glob("handle_udp-*.bin"))
