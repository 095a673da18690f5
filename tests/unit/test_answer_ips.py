"""Addresses in upstream answers (resolver/answer_ips.py), built with dnspython."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rrset

from resolver.answer_ips import address_text, answer_addresses, blocked_address


def answer(*records: tuple[str, str, str], additional: tuple[str, str, str] | None = None) -> bytes:
    query = dns.message.make_query("www.example", "A")
    response = dns.message.make_response(query)
    for owner, rtype, data in records:
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", rtype, data))
    if additional is not None:
        response.additional.append(dns.rrset.from_text(additional[0], 60, "IN", *additional[1:]))
    return response.to_wire()


def test_addresses_through_a_cname_chain_and_only_from_the_answer_section() -> None:
    wire = answer(
        ("www.example.", "CNAME", "cdn.example."),
        ("cdn.example.", "CNAME", "edge.cdn.example."),
        ("edge.cdn.example.", "A", "192.0.2.1"),
        ("edge.cdn.example.", "AAAA", "2001:db8::7"),
        ("edge.cdn.example.", "TXT", '"x"'),
        additional=("ns.example.", "A", "198.51.100.1"),
    )
    got = [str(ipaddress.ip_address(a)) for a in answer_addresses(wire)]
    assert got == ["192.0.2.1", "2001:db8::7"]
    assert answer_addresses(b"\x00" * 5) == ()


def test_the_first_blocked_address_decides_and_allowed_ones_are_exempt() -> None:
    is_block = [False, True, False]  # pid 1 blocks, pid 2 allows
    pids = {b"\xc0\x00\x02\x01": 2, b"\xc0\x00\x02\x02": 1}
    addresses = [b"\xc0\x00\x02\x01", b"\x0a\x00\x00\x01", b"\xc0\x00\x02\x02"]
    assert blocked_address(lambda a: pids.get(a, 0), is_block, addresses) == (1, addresses[2])
    assert blocked_address(lambda a: pids.get(a, 0), is_block, addresses[:2]) is None
    assert address_text(addresses[2]) == b"192.0.2.2"
    assert address_text(ipaddress.ip_address("2001:db8::1").packed) == b"2001:db8::1"
