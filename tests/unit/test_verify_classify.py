"""Every verdict class from crafted dnspython answers, the folding of a name's probes, and the
learning of landing addresses."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver.verify.classify import (
    BlockTargets,
    Observation,
    Response,
    Verdict,
    canonical_addresses,
    classify,
    learn_block_targets,
    name_verdict,
    registrable_name,
    response_from_message,
)

LANDING = "192.0.2.10"
TARGETS = BlockTargets(
    landing=canonical_addresses([LANDING, "2001:DB8::0010"]), hosts=frozenset({"blocked.isp.test"})
)


def answer(
    name: str,
    rdtype: str = "A",
    *records: tuple[str, str, str],
    rcode: int = dns.rcode.NOERROR,
    ede: tuple[int, str] | None = None,
) -> Response:
    """A response to `name rdtype` with (owner, type, rdata) records and an optional EDE, taken
    through the wire format as a resolver would send it."""
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.Rcode(rcode))
    for owner, rtype, rdata in records:
        absolute = owner if owner.endswith(".") else owner + "."
        reply.answer.append(dns.rrset.from_text(absolute, 60, "IN", rtype, rdata))
    if ede is not None:
        reply.use_edns(0, options=[dns.edns.EDEOption(dns.edns.EDECode(ede[0]), ede[1])])
    return response_from_message(dns.message.from_wire(reply.to_wire()), rdtype)


def a(name: str, *addresses: str, rdtype: str = "A") -> Response:
    return answer(name, rdtype, *((name, rdtype, addr) for addr in addresses))


CONTROL_LIVE = a("site.test", "198.51.100.7")
CONTROL_DEAD = answer("site.test", rcode=dns.rcode.NXDOMAIN)


def verdict(response: Response, control: Response | None = None) -> Verdict:
    return classify(response, control, TARGETS)[0]


def test_landing_given_canonical_and_null() -> None:
    assert verdict(a("site.test", LANDING)) is Verdict.LANDING
    assert verdict(a("site.test", "2001:db8::10", rdtype="AAAA")) is Verdict.LANDING
    # Sinkhole null addresses always mean blocked, even without --landing.
    assert verdict(a("site.test", "0.0.0.0")) is Verdict.LANDING
    assert verdict(a("site.test", "::", rdtype="AAAA")) is Verdict.LANDING
    # A landing address with EDE 16 is still landing; the EDE is recorded on the probe.
    tagged = answer(
        "site.test", "A", ("site.test", "A", LANDING), ede=(16, "blocked by blokir: list x")
    )
    assert verdict(tagged) is Verdict.LANDING
    assert tagged.ede == ((16, "blocked by blokir: list x"),)
    assert tagged.blocking_ede == (16, "blocked by blokir: list x")


def test_nxdomain_dead_and_ede() -> None:
    nx = answer("site.test", rcode=dns.rcode.NXDOMAIN)
    assert verdict(nx) is Verdict.NXDOMAIN  # no control: cannot tell dead from blocked
    assert verdict(nx, CONTROL_LIVE) is Verdict.NXDOMAIN
    assert verdict(nx, CONTROL_DEAD) is Verdict.DEAD
    # The resolver said why: an NXDOMAIN with EDE 15 is a block even for a dead name.
    nx_ede = answer("site.test", rcode=dns.rcode.NXDOMAIN, ede=(15, "policy"))
    assert verdict(nx_ede, CONTROL_DEAD) is Verdict.NXDOMAIN


@pytest.mark.parametrize("code", [15, 16, 17])
def test_ede_on_other_answers(code: int) -> None:
    nodata = answer("site.test", ede=(code, "filtered by policy"))
    assert verdict(nodata, CONTROL_LIVE) is Verdict.EDE
    servfail = answer("site.test", rcode=dns.rcode.SERVFAIL, ede=(code, ""))
    assert verdict(servfail) is Verdict.EDE


def test_non_blocking_ede_is_not_a_block() -> None:
    stale = answer("site.test", rcode=dns.rcode.SERVFAIL, ede=(22, "no reachable authority"))
    assert verdict(stale) is Verdict.ERROR
    assert stale.blocking_ede is None


def test_cname_to_block_host() -> None:
    chained = answer(
        "site.test",
        "A",
        ("site.test", "CNAME", "Blocked.ISP.test."),
        ("blocked.isp.test", "A", "203.0.113.1"),
    )
    assert chained.cnames == ("blocked.isp.test",)
    assert verdict(chained, CONTROL_LIVE) is Verdict.CNAME
    only_cname = answer("site.test", "A", ("site.test", "CNAME", "blocked.isp.test."))
    assert verdict(only_cname) is Verdict.CNAME
    elsewhere = answer(
        "site.test", "A", ("site.test", "CNAME", "cdn.test."), ("cdn.test", "A", "203.0.113.9")
    )
    assert verdict(elsewhere) is Verdict.NOT_BLOCKED


def test_refused_nodata_error() -> None:
    assert verdict(answer("site.test", rcode=dns.rcode.REFUSED)) is Verdict.REFUSED
    assert verdict(answer("site.test")) is Verdict.NODATA
    assert verdict(answer("site.test", rcode=dns.rcode.SERVFAIL)) is Verdict.ERROR
    assert verdict(answer("site.test", rcode=dns.rcode.FORMERR)) is Verdict.ERROR
    timeout = Response(rcode=None, error="timeout", attempts=3)
    assert verdict(timeout) is Verdict.ERROR
    assert timeout.rcode_text == "NOANSWER"


def test_not_blocked_compared_with_control() -> None:
    same = a("site.test", "198.51.100.7")
    other = a("site.test", "203.0.113.50")
    assert classify(same, None, TARGETS) == (Verdict.NOT_BLOCKED, None)
    assert classify(same, CONTROL_LIVE, TARGETS) == (Verdict.NOT_BLOCKED, True)
    assert classify(other, CONTROL_LIVE, TARGETS) == (Verdict.NOT_BLOCKED, False)
    assert classify(other, CONTROL_DEAD, TARGETS) == (Verdict.NOT_BLOCKED, None)


def test_name_verdict_folds_a_and_aaaa() -> None:
    L, NB, ND = Verdict.LANDING, Verdict.NOT_BLOCKED, Verdict.NODATA
    assert name_verdict([L, ND], None) is L  # landing A, no landing AAAA: blocked
    assert name_verdict([L, NB], None) is NB  # AAAA leaks: not blocked
    assert name_verdict([Verdict.ERROR, L], None) is L
    assert name_verdict([Verdict.ERROR, NB], None) is NB
    assert name_verdict([Verdict.DEAD, Verdict.DEAD], True) is Verdict.DEAD
    assert name_verdict([ND, ND], None) is ND  # no control: no address at all counts as blocked
    assert name_verdict([ND, ND], True) is ND
    assert name_verdict([ND, ND], False) is Verdict.DEAD  # the control has nothing either
    assert name_verdict([Verdict.ERROR, Verdict.ERROR], True) is Verdict.ERROR
    assert name_verdict([Verdict.REFUSED, Verdict.EDE], None) is Verdict.REFUSED


def test_verdict_properties() -> None:
    blocked = {v for v in Verdict if v.blocked}
    assert blocked == {
        Verdict.LANDING, Verdict.NXDOMAIN, Verdict.EDE, Verdict.CNAME, Verdict.REFUSED,
        Verdict.NODATA,
    }  # fmt: skip
    assert {v for v in Verdict if not v.answered} == {Verdict.DEAD, Verdict.ERROR}
    assert all(v.description for v in Verdict)


def test_registrable_name() -> None:
    assert registrable_name("www.judi.example") == "judi.example"
    assert registrable_name("a.b.situs.co.id") == "situs.co.id"
    assert registrable_name("situs.co.id") == "situs.co.id"
    assert registrable_name("x.com.au") == "x.com.au"
    assert registrable_name("deep.sub.example.com") == "example.com"
    assert registrable_name("example.com.") == "example.com"


def observations(count: int, address: str, control: str | None = None) -> list[Observation]:
    found = []
    for i in range(count):
        domain = f"site{i}.example"
        for qname in (domain, f"www.{domain}"):  # two probes per site count once
            control_answer = a(qname, control) if control else None
            found.append(Observation(domain, a(qname, address), control_answer))
    return found


def test_learning_needs_distinct_registrable_names() -> None:
    learned = learn_block_targets(observations(5, "203.0.113.99"), BlockTargets())
    assert learned.landing == {"203.0.113.99": 5}
    assert learn_block_targets(observations(4, "203.0.113.99"), BlockTargets()).landing == {}
    # The same five sites under one registrable name are one name, not five.
    same_site = [
        Observation("judi.example", a(f"s{i}.judi.example", "203.0.113.99"), None)
        for i in range(10)
    ]
    assert learn_block_targets(same_site, BlockTargets()).landing == {}


def test_learning_skips_what_the_control_also_returns() -> None:
    # A CDN address shared by many listed sites is answered by the control too: not landing.
    cdn = observations(20, "104.21.0.1", control="104.21.0.1")
    assert learn_block_targets(cdn, BlockTargets()).landing == {}
    # An address the control never returns is.
    landing = observations(20, "203.0.113.99", control="198.51.100.7")
    assert learn_block_targets(landing, BlockTargets()).landing == {"203.0.113.99": 20}


def test_learning_does_not_repeat_known_or_null_addresses() -> None:
    known = BlockTargets(landing=frozenset({"203.0.113.99"}))
    assert learn_block_targets(observations(9, "203.0.113.99"), known).landing == {}
    assert learn_block_targets(observations(9, "0.0.0.0"), BlockTargets()).landing == {}


def test_learning_block_hosts_and_then_classifying_with_them() -> None:
    found = []
    for i in range(6):
        name = f"site{i}.example"
        chained = answer(
            name,
            "A",
            (name, "CNAME", "warning.isp.test."),
            ("warning.isp.test", "A", "203.0.113.5"),
        )
        found.append(Observation(name, chained, a(name, "198.51.100.7")))
    # An alias inside the site itself (www -> apex) is never a block host.
    inside = answer("www.site0.example", "A", ("www.site0.example", "CNAME", "site0.example."))
    found.append(Observation("site0.example", inside, None))
    learned = learn_block_targets(found, BlockTargets())
    assert learned.hosts == {"warning.isp.test": 6}
    assert learned.landing == {"203.0.113.5": 6}
    targets = BlockTargets().with_learned(learned)
    assert classify(found[0].response, found[0].control, targets)[0] is Verdict.LANDING
    cname_only = BlockTargets(hosts=frozenset(learned.hosts))
    assert classify(found[0].response, found[0].control, cname_only)[0] is Verdict.CNAME
