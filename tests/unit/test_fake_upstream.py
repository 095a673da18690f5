"""The shared fake upstream (tests/support/upstream.py) does what the suites rely on: zone data
with NXDOMAIN/NODATA and CNAMEs, rules that combine (newer ones override), rules spent after
`times`, per-transport rules, TC and cut replies, forgeries, and a record of every query."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.upstream import FORGED, FakeUpstream, read_question

LOOPBACK = "127.0.0.1"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def ask(
    upstream: FakeUpstream, name: str, rdtype: str = "A", tcp: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, LOOPBACK, port=upstream.port, timeout=2)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


def test_zone_data_nxdomain_nodata_and_cname(upstream: FakeUpstream) -> None:
    upstream.add("www.example", "A", "192.0.2.1", "192.0.2.2")
    upstream.cname("alias.example", "www.example")
    assert sorted(addresses(ask(upstream, "WWW.example"))) == ["192.0.2.1", "192.0.2.2"]
    nodata = ask(upstream, "www.example", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    missing = ask(upstream, "missing.example")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority
    chased = ask(upstream, "alias.example")
    assert [rrset.rdtype for rrset in chased.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert [(q.transport, q.name, q.rdtype) for q in upstream.queries][:2] == [
        ("udp", "www.example", "A"),
        ("udp", "www.example", "AAAA"),
    ]
    assert upstream.seen("www.example") == 2 and upstream.seen("nothing.example") == 0


def test_rules_combine_newer_ones_override_and_times_run_out(upstream: FakeUpstream) -> None:
    upstream.program(answer=["192.0.2.1"], flags=dns.flags.AA)
    upstream.program("sub.example", subtree=True, answer=["192.0.2.2"])
    upstream.program("once.sub.example", times=1, rcode=dns.rcode.SERVFAIL, answer=())
    plain = ask(upstream, "any.example")
    assert addresses(plain) == ["192.0.2.1"] and plain.flags & dns.flags.AA
    below = ask(upstream, "x.sub.example")
    assert addresses(below) == ["192.0.2.2"] and below.flags & dns.flags.AA  # both rules
    assert ask(upstream, "once.sub.example").rcode() == dns.rcode.SERVFAIL
    assert addresses(ask(upstream, "once.sub.example")) == ["192.0.2.2"]  # spent
    assert addresses(ask(upstream, "notsub.example")) == ["192.0.2.1"]  # a label, not a suffix
    upstream.clear()
    assert ask(upstream, "any.example").rcode() == dns.rcode.NXDOMAIN


def test_tc_over_udp_only_and_big_answers_fit_a_client_without_edns(
    upstream: FakeUpstream,
) -> None:
    upstream.add("tcp.example", "A", "192.0.2.3")
    upstream.program("tcp.example", transport="udp", tc=True)
    truncated = ask(upstream, "tcp.example")
    assert truncated.flags & dns.flags.TC and not truncated.answer
    assert addresses(ask(upstream, "tcp.example", tcp=True)) == ["192.0.2.3"]
    upstream.add("big.example", "TXT", *[f'"{"x" * 200} {i}"' for i in range(12)])
    big = ask(upstream, "big.example", "TXT")
    assert big.flags & dns.flags.TC and not big.answer  # RFC 1035 4.2.1: 512 octets
    assert len(ask(upstream, "big.example", "TXT", tcp=True).answer[0]) == 12
    assert [q.transport for q in upstream.requests("tcp")] == ["tcp", "tcp"]


def test_drop_cut_and_forgeries_reach_the_client(upstream: FakeUpstream) -> None:
    upstream.program(answer=["192.0.2.1"])
    upstream.program("cut.example", cut=5)
    upstream.program("silent.example", drop=True)
    upstream.program("raced.example", forge=("id", "port"), delay=0.05, forge_after=("same",))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for name, expected in (("cut.example", 1), ("silent.example", 0), ("raced.example", 4)):
            query = dns.message.make_query(name, "A")
            sock.sendto(query.to_wire(), (LOOPBACK, upstream.port))
            got: list[tuple[bytes, int]] = []
            for _ in range(expected + 1):  # bounded: one more than expected, to see no extra
                try:
                    data, source = sock.recvfrom(4096)
                except TimeoutError:
                    break
                got.append((data, source[1]))
            assert len(got) == expected, name
            if name == "cut.example":
                assert len(got[0][0]) == 5
            if name == "raced.example":
                wrong_id, other_port, real, late = got
                assert wrong_id[0][:2] != query.to_wire()[:2]
                assert other_port[1] != upstream.port
                assert addresses(dns.message.from_wire(real[0])) == ["192.0.2.1"]
                assert addresses(dns.message.from_wire(late[0])) == [FORGED]
    assert upstream.forged == 3


def test_the_question_is_read_from_octets() -> None:
    wire = dns.message.make_query("WwW.Example.", "AAAA").to_wire()
    assert read_question(wire) == ("www.example", "AAAA")
    assert read_question(wire[:14]) == ("", "")
    assert read_question(wire[:12] + b"\xc0\x0c\x00\x01\x00\x01") == ("", "")
