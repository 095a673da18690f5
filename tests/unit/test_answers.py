"""Block answers for every action x qtype x EDNS/no-EDNS, parsed back with dnspython."""

from __future__ import annotations

import json

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from resolver.dns.answers import BlockResponder, BlockSettings
from resolver.dns.query import parse_query
from resolver.policy import Action, Ede, Policy

POLICIES = [
    Policy("trustpositif", "gambling", Action.LANDING, Ede.CENSORED),
    Policy("nx", "malware", Action.NXDOMAIN, Ede.BLOCKED),
    Policy("nodata", "ads", Action.NODATA, Ede.FILTERED),
    Policy("refuse", "misc", Action.REFUSED, Ede.NONE),
    Policy("drop", "misc", Action.DROP, Ede.BLOCKED),
    Policy("own-landing", "fintech", Action.LANDING, Ede.CENSORED, ("198.51.100.7",), ()),
]
SETTINGS = BlockSettings(ttl=120, landing_ipv4="192.0.2.10", landing_ipv6="2001:db8::10")
QTYPES = ["A", "AAAA", "HTTPS", "MX", "TXT"]


def ask(responder: BlockResponder, pid: int, qtype: str, edns: bool, do: bool = False):  # type: ignore[no-untyped-def]
    request = dns.message.make_query(
        "Judi.Example.", qtype, use_edns=0 if edns else None, want_dnssec=do
    )
    request.flags |= dns.flags.CD
    request.id = 4242
    query = parse_query(request.to_wire())
    raw = responder.answer(query, pid)
    return None if raw is None else dns.message.from_wire(raw)


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("pid", range(1, len(POLICIES) + 1))
def test_every_action_qtype_edns(pid: int, qtype: str, edns: bool) -> None:
    responder = BlockResponder(POLICIES, SETTINGS)
    policy = POLICIES[pid - 1]
    response = ask(responder, pid, qtype, edns)
    if policy.action is Action.DROP:
        assert response is None
        return
    assert response is not None
    assert response.id == 4242
    assert str(response.question[0].name) == "Judi.Example."  # 0x20 case echoed
    assert response.flags & dns.flags.QR and response.flags & dns.flags.RA
    assert response.flags & dns.flags.RD and response.flags & dns.flags.CD  # copied
    assert not response.flags & dns.flags.AA  # never authoritative
    expected_rcode = {
        Action.LANDING: dns.rcode.NOERROR,
        Action.NXDOMAIN: dns.rcode.NXDOMAIN,
        Action.NODATA: dns.rcode.NOERROR,
        Action.REFUSED: dns.rcode.REFUSED,
    }[policy.action]
    assert response.rcode() == expected_rcode
    addresses = [rd.address for rrset in response.answer for rd in rrset]
    if policy.action is Action.LANDING and qtype in ("A", "AAAA"):
        expected = {
            ("A", "trustpositif"): ["192.0.2.10"],
            ("AAAA", "trustpositif"): ["2001:db8::10"],
            ("A", "own-landing"): ["198.51.100.7"],  # the list's own address wins
            ("AAAA", "own-landing"): ["2001:db8::10"],  # no per-list v6: the global one
        }[(qtype, policy.list_name)]
        assert addresses == expected
        assert response.answer[0].ttl == 120
        assert not response.authority
    elif policy.action is Action.REFUSED:
        assert not response.answer and not response.authority
    else:
        # NODATA/NXDOMAIN: a SOA whose MINIMUM is the block TTL (RFC 2308 negative caching).
        assert not response.answer
        (soa_rrset,) = response.authority
        assert soa_rrset.rdtype == dns.rdatatype.SOA and soa_rrset[0].minimum == 120
    if not edns:
        assert response.edns == -1
        return
    assert response.edns == 0
    ede = [o for o in response.options if isinstance(o, dns.edns.EDEOption)]
    if policy.ede is Ede.NONE:
        assert ede == []
    else:
        (option,) = ede
        assert option.code == policy.ede.code
        assert option.text == (
            f"blocked by blokir: list {policy.list_name}, category {policy.category}, "
            f"action {policy.action.value}"
        )


def test_landing_without_addresses_is_nodata() -> None:
    responder = BlockResponder(POLICIES[:1], BlockSettings(ttl=60))
    response = ask(responder, 1, "A", edns=False)
    assert response is not None and response.rcode() == dns.rcode.NOERROR
    assert not response.answer and response.authority[0].rdtype == dns.rdatatype.SOA


def test_do_bit_echoed() -> None:
    responder = BlockResponder(POLICIES, SETTINGS)
    response = ask(responder, 1, "A", edns=True, do=True)
    assert response is not None and response.ednsflags & dns.flags.DO


def test_structured_dns_error_json() -> None:
    settings = BlockSettings(
        landing_ipv4="192.0.2.10",
        contact="mailto:abuse@isp.example",
        justification="Blocked under regulation",
        organisation="Example ISP",
    )
    response = ask(BlockResponder(POLICIES, settings), 1, "A", edns=True)
    assert response is not None
    (option,) = response.options
    payload = json.loads(option.text)
    assert payload == {
        "c": ["mailto:abuse@isp.example"],
        "j": "Blocked under regulation (list trustpositif, category gambling, action landing)",
        "o": "Example ISP",
    }


def test_templates_are_reused() -> None:
    responder = BlockResponder(POLICIES, SETTINGS)
    ask(responder, 1, "A", edns=True)
    ask(responder, 1, "A", edns=True)
    ask(responder, 5, "A", edns=True)  # drop is remembered too
    assert len(responder._templates) == 2


def test_answers_per_flags_do_not_leak_between_queries() -> None:
    """Answers are kept per copied query flags: a query without RD/CD after one with them (and
    the other way round) gets its own flags back, and its own ID."""
    responder = BlockResponder(POLICIES, SETTINGS)
    seen = []
    for rd, cd, qid in ((True, True, 1), (False, False, 2), (True, False, 3), (True, True, 4)):
        request = dns.message.make_query("judi.example.", "A", use_edns=None)
        request.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
        request.id = qid
        raw = responder.answer(parse_query(request.to_wire()), 1)
        assert raw is not None
        response = dns.message.from_wire(raw)
        assert response.id == qid
        assert (
            bool(response.flags & dns.flags.RD) is rd and bool(response.flags & dns.flags.CD) is cd
        )
        assert response.flags & dns.flags.QR and response.flags & dns.flags.RA
        seen.append(raw[2:])
    assert seen[0] == seen[3] and len(set(seen)) == 3
    assert len(responder._templates) == 1 and len(responder._answers) == 3
