"""RFC 8482 section 4.2: ANY over UDP gets one synthesized HINFO record, not everything the
name has (ANY is the classic amplification query). Golden answers from any_minimal_answer
read back with dnspython, and the handler's choices: blocked names keep their block answer,
TCP still forwards ANY."""

from __future__ import annotations

import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from resolver.dns.constants import CD, TYPE_ANY
from resolver.dns.query import Query, parse_query
from resolver.dns.response import ANY_TTL, any_minimal_answer
from resolver.pipeline import Resolver
from tests.unit.resolvers import make_resolver

BLOCKED = "judi-contoh.example"


def make(name: str = "WwW.Example.COM", rdtype: str = "ANY", **kw: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    message.id = 0xBEEF
    return message.to_wire()


def test_golden_bytes_without_edns() -> None:
    data = make()
    answer = any_minimal_answer(data, parse_query(data), 1232, 3600)
    question = data[12:]
    expected = (
        struct.pack("!HHHHHH", 0xBEEF, 0x8180, 1, 1, 0, 0)  # QR RD RA, NOERROR
        + question
        + b"\xc0\x0c"  # owner: the question name
        + struct.pack("!HHIH", 13, 1, 3600, 9)  # HINFO IN TTL RDLENGTH
        + b"\x07RFC8482"  # CPU
        + b"\x00"  # OS: the empty string
    )
    assert answer == expected


def test_dnspython_reads_one_hinfo_owned_by_the_question_name_case_kept() -> None:
    data = make()
    answer = dns.message.from_wire(any_minimal_answer(data, parse_query(data), 1232, 3600))
    assert answer.id == 0xBEEF and answer.rcode() == dns.rcode.NOERROR
    assert answer.flags & dns.flags.QR and answer.flags & dns.flags.RA
    assert answer.flags & dns.flags.RD and not answer.flags & dns.flags.AA
    assert answer.edns == -1 and not answer.authority and not answer.additional
    (rrset,) = answer.answer
    assert rrset.rdtype == dns.rdatatype.HINFO and rrset.rdclass == dns.rdataclass.IN
    assert rrset.name.to_text() == "WwW.Example.COM."  # 0x20 case preserved
    assert rrset.ttl == 3600
    (hinfo,) = rrset
    assert hinfo.cpu == b"RFC8482" and hinfo.os == b""
    assert str(answer.question[0].name) == "WwW.Example.COM."


@pytest.mark.parametrize("do", [False, True])
def test_edns_query_gets_our_opt_with_do_echoed(do: bool) -> None:
    data = make(use_edns=0, payload=4096, want_dnssec=do)
    answer = dns.message.from_wire(any_minimal_answer(data, parse_query(data), 1232, 60))
    assert answer.edns == 0 and answer.payload == 1232
    assert bool(answer.ednsflags & dns.flags.DO) == do
    assert answer.answer[0].ttl == 60 and len(answer.answer[0]) == 1


def test_cd_copied_and_ttl_kept_in_range() -> None:
    data = make()
    data = data[:2] + struct.pack("!H", struct.unpack_from("!H", data, 2)[0] | CD) + data[4:]
    query = parse_query(data)
    low = dns.message.from_wire(any_minimal_answer(data, query, 1232, -5))
    high = dns.message.from_wire(any_minimal_answer(data, query, 1232, 1 << 40))
    assert low.flags & dns.flags.CD
    assert low.answer[0].ttl == 0 and high.answer[0].ttl == 2**31 - 1  # RFC 2181 8


def test_minimal_answer_is_small_whatever_the_name() -> None:
    """The point of RFC 8482: the answer is the question plus 21 octets (plus 11 with EDNS),
    so ANY over UDP amplifies nothing."""
    for name in ("a.example", "x" * 63 + "." + "y" * 63 + ".example"):
        data = make(name)
        assert len(any_minimal_answer(data, parse_query(data), 1232, 60)) == len(data) + 21


# -- the handler ---------------------------------------------------------------------------------


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    return make_resolver(tmp_path, [BLOCKED])


@pytest.mark.parametrize("udp", [True, False])
def test_blocked_name_any_still_gets_the_block_answer(resolver: Resolver, udp: bool) -> None:
    """The block check comes first: ANY for a blocked name is answered like any other non-A
    type of that list (landing action: NODATA with the synthesized SOA), never with HINFO."""
    data = make(BLOCKED.upper())
    answer = resolver.handle(data, "127.0.0.1", udp=udp)[0]
    assert isinstance(answer, bytes)
    message = dns.message.from_wire(answer)
    assert message.rcode() == dns.rcode.NOERROR and not message.answer
    assert message.authority[0].rdtype == dns.rdatatype.SOA


def test_any_over_tcp_is_forwarded(resolver: Resolver) -> None:
    """Over TCP the client's address is proven by the handshake, so there is no amplification
    to prevent: ANY goes upstream as before."""
    result = resolver.handle(make(), "127.0.0.1", udp=False)[0]
    assert isinstance(result, Query) and result.qtype == TYPE_ANY


def test_any_over_udp_gets_the_minimal_answer(resolver: Resolver) -> None:
    data = make(use_edns=0)
    answer = resolver.handle(data, "127.0.0.1", udp=True)[0]
    assert answer == any_minimal_answer(data, parse_query(data), 1232, ANY_TTL)
