"""RFC 2181 9: a UDP answer gets TC only when a required RRset does not fit, not because the
upstream's optional referral data (authority NS, additional glue) does. What is required stays:
the answer section, the OPT record (RFC 6891 7), a negative answer's SOA (RFC 2308 3), an NSEC
proof in the authority section (RFC 4035 3.1.3); a signed answer is never cut."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.tsig
import dns.tsigkeyring

from resolver.dns.message import within_limit
from resolver.dns.query import Query
from tests.unit.resolvers import make_resolver

NAME = "mid.example."


def to_wire(message: dns.message.Message) -> bytes:
    return message.to_wire(max_size=65535)


def answer(
    *,
    edns: bool = True,
    authority: str = "NS",
    glue: bool = True,
    strings: int = 5,
    size: int = 200,
) -> dns.message.Message:
    """`strings` TXT records of `size` octets, with the referral data an authority adds."""
    message = dns.message.make_query(NAME, "TXT", use_edns=0 if edns else False)
    reply = dns.message.make_response(message)
    txt = [f'"{i:03d}{"y" * (size - 3)}"' for i in range(strings)]
    reply.answer.append(dns.rrset.from_text_list(NAME, 300, "IN", "TXT", txt))
    if authority == "NS":
        ns = [f"ns{i}.provider-with-a-long-name.example." for i in range(4)]
        reply.authority.append(dns.rrset.from_text_list("example.", 300, "IN", "NS", ns))
    elif authority == "NSEC":
        reply.authority.append(dns.rrset.from_text("a.example.", 300, "IN", "NSEC", "z.example. A"))
    if glue:
        for i in range(4):
            name = f"ns{i}.provider-with-a-long-name.example."
            reply.additional.append(dns.rrset.from_text(name, 300, "IN", "AAAA", f"2001:db8::{i}"))
    return reply


def sizes(reply: dns.message.Message) -> tuple[int, int, int]:
    """Octets of the whole answer, without the additional records, and without authority too."""
    whole = len(to_wire(reply))
    reply = dns.message.from_wire(to_wire(reply))
    reply.additional = []
    no_glue = len(to_wire(reply))
    reply.authority = []
    return whole, no_glue, len(to_wire(reply))


def test_glue_then_authority_ns_go_before_tc_is_needed() -> None:
    reply = answer()
    whole, no_glue, bare = sizes(reply)
    wire = to_wire(reply)
    assert whole > no_glue > bare
    kept = within_limit(wire, no_glue)
    assert kept is not None and len(kept) == no_glue
    parsed = dns.message.from_wire(kept)
    assert parsed.answer == reply.answer and parsed.authority == reply.authority
    assert parsed.additional == [] and parsed.edns == 0  # the OPT record stays
    kept = within_limit(wire, bare)
    assert kept is not None
    parsed = dns.message.from_wire(kept)
    assert parsed.answer == reply.answer and parsed.authority == [] and parsed.edns == 0
    assert within_limit(wire, bare - 1) is None  # the answer itself does not fit: TC


def test_required_authority_records_and_signed_answers_stay_whole() -> None:
    proof = to_wire(answer(authority="NSEC"))
    _, no_glue, _ = sizes(answer(authority="NSEC"))
    assert within_limit(proof, no_glue - 1) is None
    negative = answer(glue=True, authority="none")
    negative.answer = []
    negative.set_rcode(dns.rcode.NXDOMAIN)
    negative.authority.append(
        dns.rrset.from_text("example.", 60, "IN", "SOA", "ns. host. 1 3600 600 86400 60")
    )
    _, no_glue, _ = sizes(negative)
    kept = within_limit(to_wire(negative), no_glue)
    assert kept is not None and dns.message.from_wire(kept).authority == negative.authority
    assert within_limit(to_wire(negative), no_glue - 1) is None
    signed = answer()
    keyring = dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    signed.use_tsig(keyring, keyname="k.")
    assert within_limit(to_wire(signed), sizes(answer())[2] + 200) is None
    assert within_limit(b"\x00" * 5, 512) is None  # does not parse: left to the caller


def test_the_resolver_drops_glue_rather_than_truncating(tmp_path: Path) -> None:
    resolver = make_resolver(tmp_path)
    reply = answer(edns=False, strings=2, size=160)
    _, no_glue, _ = sizes(reply)
    assert no_glue <= 512 < len(to_wire(reply))  # fits in 512 octets only without the glue
    ask = dns.message.make_query(NAME, "TXT", id=1).to_wire()
    asked = resolver.handle(ask, "127.0.0.1")[0]
    assert isinstance(asked, Query)
    reply.id = 1
    resolver.cache.put(resolver._cache_key(asked), to_wire(reply))
    for _ in range(2):  # the cache, then the memo
        got = resolver.handle(ask, "127.0.0.1")[0]
        assert isinstance(got, bytes)
        parsed = dns.message.from_wire(got)
        assert not parsed.flags & dns.flags.TC and parsed.answer == reply.answer
        assert parsed.additional == []
    assert resolver.stats.truncated == 0
