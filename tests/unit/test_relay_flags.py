"""Header bits of relayed answers (forwarded, cached, remembered, renewed, coalesced, stale):
every bit that describes the exchange comes from the asker's own query, never from the query
that filled the cache or from the upstream's header (RFC 1035 4.1.1, RFC 4035 3.2.2, RFC 6840
5.7/5.8). And what goes upstream: RD and AD set, CD the asker's, Z clear."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver import metrics
from resolver.dns.constants import (
    AA,
    AD,
    CD,
    NOTIMP,
    OPCODE_MASK,
    QR,
    RA,
    RCODE_MASK,
    RD,
    REFUSED,
    TC,
)
from resolver.dns.query import parse_query, upstream_request
from resolver.dns.response import relay_flags, response_flags
from resolver.pipeline import Resolver
from tests.unit.test_inflight import (
    STALE_ON,
    expire,
    forward_all,
    make_clocked_resolver,
    scripted,
)

# An upstream header with what a relay must not pass on: AA (it is authoritative, blokir is
# not), Z, RA clear; and AD (it validated), for the askers that want it. (TC too in the pure
# test: a truncated answer is never cached, and the pool retries it over TCP.)
HOSTILE_UPSTREAM_FLAGS = dns.flags.QR | dns.flags.AA | dns.flags.AD | 0x0040


def ask(name: str, qid: int, flags: int = dns.flags.RD, edns: int = -1, do: bool = False) -> bytes:
    message = dns.message.make_query(name, "A", use_edns=edns, want_dnssec=do)
    message.id = qid
    message.flags = flags
    return message.to_wire()


def upstream_answer(request: bytes) -> bytes:
    message = dns.message.from_wire(request)
    response = dns.message.make_response(message)
    response.flags = HOSTILE_UPSTREAM_FLAGS
    name = message.question[0].name
    response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.9"))
    return response.to_wire()


def flags_of(answer: bytes | None) -> int:
    assert answer is not None
    return int(struct.unpack_from("!H", answer, 2)[0])


def expected(query_flags: int, do: bool, rcode: int = 0) -> int:
    wants_ad = bool(do or query_flags & AD)
    return QR | RA | (query_flags & (RD | CD)) | (AD if wants_ad else 0) | rcode


@pytest.mark.parametrize(
    ("query_flags", "upstream_flags"),
    list(itertools.product(range(0, 0x8000, 0x10), (0, HOSTILE_UPSTREAM_FLAGS | TC | 3))),
)
def test_relay_flags_take_the_exchange_from_the_query(
    query_flags: int, upstream_flags: int
) -> None:
    """Every query flag combination (QR clear, as parse_query requires): ID-side bits copied,
    AA/TC/Z never passed on, RCODE from the upstream, AD only for an asker with AD or DO."""
    for do in (False, True):
        flags = relay_flags(query_flags, bool(do or query_flags & AD), upstream_flags)
        assert flags & QR and flags & RA
        assert not flags & (AA | TC | 0x0040)
        assert flags & (OPCODE_MASK | RD | CD) == query_flags & (OPCODE_MASK | RD | CD)
        assert flags & RCODE_MASK == upstream_flags & RCODE_MASK
        wants_ad = do or query_flags & AD
        assert bool(flags & AD) == bool(wants_ad and upstream_flags & AD)


def test_response_flags_set_ra_for_a_query_only() -> None:
    assert response_flags(RD, REFUSED) & RA
    notify = 4 << 11
    assert not response_flags(notify | RD, NOTIMP) & RA


@pytest.mark.parametrize(
    ("first", "then"),
    [
        # (flags of the query that filled the cache, do), (flags of a later asker, do)
        ((dns.flags.RD | dns.flags.AD, False), (dns.flags.RD, False)),
        ((dns.flags.RD, False), (dns.flags.RD | dns.flags.AD, False)),
        ((dns.flags.RD | dns.flags.CD, True), (dns.flags.RD | dns.flags.CD, True)),
        ((dns.flags.RD, True), (dns.flags.RD | dns.flags.AD, True)),
    ],
)
def test_forwarded_cached_remembered_and_renewed_answers_carry_the_askers_bits(
    tmp_path: Path, first: tuple[int, bool], then: tuple[int, bool]
) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)
    upstream.answer = upstream_answer
    edns = 0 if first[1] or then[1] else -1
    filler = ask("www.example", 1, first[0], edns, first[1])
    (forwarded,) = forward_all(resolver, upstream, [filler])
    assert flags_of(forwarded) == expected(first[0], first[1])
    # What went upstream: RD and AD set (RFC 6840 5.7), CD as asked, Z and the rest clear.
    (sent,) = upstream.asked
    assert flags_of(sent) == RD | AD | (first[0] & CD)

    data = ask("www.example", 2, then[0], edns, then[1])
    for _ in range(3):  # the cache, then the memo (remembered), then the memo again
        hit = resolver.handle(data, "127.0.0.1")[0]
        assert isinstance(hit, bytes)
        assert flags_of(hit) == expected(then[0], then[1]), hex(flags_of(hit))
    expire(resolver, 2)  # the TTLs ticked: the remembered answer is renewed from the cache
    renewed = resolver.handle(data, "127.0.0.1")[0]
    assert isinstance(renewed, bytes)
    assert flags_of(renewed) == expected(then[0], then[1])
    assert dns.message.from_wire(renewed).answer[0].ttl == 298
    over_tcp = resolver.handle(data, "127.0.0.1", udp=False)[0]
    assert isinstance(over_tcp, bytes) and flags_of(over_tcp) == expected(then[0], then[1])
    assert len(upstream.asked) == 1


def test_coalesced_askers_each_get_their_own_bits(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)
    upstream.answer = upstream_answer
    askers = [dns.flags.RD, dns.flags.RD | dns.flags.AD, dns.flags.RD | dns.flags.AD]
    datas = [ask("co.example", i, flags) for i, flags in enumerate(askers)]
    answers = forward_all(resolver, upstream, datas)
    assert len(upstream.asked) == 1
    assert [flags_of(a) for a in answers] == [expected(f, False) for f in askers]


def test_stale_answers_carry_the_askers_bits(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, cache_extra=STALE_ON)
    upstream = scripted(resolver)
    upstream.answer = upstream_answer
    forward_all(resolver, upstream, [ask("old.example", 1, dns.flags.RD | dns.flags.AD, edns=0)])
    expire(resolver, 301)
    upstream.answer = lambda request: None
    (stale,) = forward_all(resolver, upstream, [ask("old.example", 2, dns.flags.RD, edns=0)])
    message = dns.message.from_wire(stale or b"")
    assert resolver.stats.outcome_total(metrics.STALE) == 1 and message.answer
    assert flags_of(stale) == expected(dns.flags.RD, False)


def test_a_query_without_rd_is_refused_even_when_cached(tmp_path: Path) -> None:
    """No cache snooping: RD=0 never reads the cache or goes upstream (Unbound's default for
    clients without allow_snoop); EDE 18 Prohibited says why. A blocked name still gets its
    block answer, with RD clear as asked."""
    resolver: Resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)
    upstream.answer = upstream_answer
    forward_all(resolver, upstream, [ask("www.example", 1)])
    for edns in (-1, 0):
        refused = resolver.handle(ask("www.example", 2, 0, edns), "127.0.0.1")[0]
        assert isinstance(refused, bytes)
        message = dns.message.from_wire(refused)
        assert message.rcode() == dns.rcode.REFUSED and not message.answer
        assert flags_of(refused) == QR | RA | REFUSED
        if edns == 0:
            (ede,) = message.options
            assert isinstance(ede, dns.edns.EDEOption) and ede.code == dns.edns.EDECode.PROHIBITED
    blocked = resolver.handle(ask("judi-contoh.example", 3, 0), "127.0.0.1")[0]
    assert isinstance(blocked, bytes)
    assert dns.message.from_wire(blocked).answer and not flags_of(blocked) & RD
    assert len(upstream.asked) == 1


def test_a_signed_query_goes_upstream_with_its_own_flags() -> None:
    """A TSIG signs the header (RFC 8945 4.3.3): upstream_request must not set RD or AD in it."""
    import dns.tsigkeyring

    keyring = dns.tsigkeyring.from_text({"k.": ("hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0")})
    message = dns.message.make_query("example.com", "A")
    message.use_tsig(keyring, keyname="k.")
    data = message.to_wire()
    assert upstream_request(data, parse_query(data)) is data
    unsigned = dns.message.make_query("example.com", "A").to_wire()
    assert flags_of(upstream_request(unsigned, parse_query(unsigned))) == (RD | AD)


def test_a_cname_into_a_drop_listed_name_gets_no_answer(tmp_path: Path) -> None:
    """RPZ `rpz-drop.` on the CNAME target: the asker gets nothing, not the upstream's answer
    (which would hand over the very address the list keeps from it)."""
    from resolver.compile import compile_lists, write_index
    from resolver.config import parse_config
    from resolver.index import open_index
    from resolver.pipeline import Resolver as PipelineResolver

    (tmp_path / "drop.rpz").write_text(
        "$TTL 60\n@ SOA localhost. root.localhost. 1 1 1 1 1\n@ NS localhost.\n"
        "dropped.example CNAME rpz-drop.\n"
    )
    config = parse_config(
        '[server]\nallow = ["127.0.0.0/8"]\n[upstream]\nservers = ["127.0.0.1:9"]\n'
        '[[lists]]\nname = "d"\npath = "drop.rpz"\nformat = "rpz"\n',
        tmp_path / "blokir.toml",
    )
    write_index(compile_lists(config.list_specs()), tmp_path / "i.blkx")
    resolver = PipelineResolver(config, open_index(tmp_path / "i.blkx"))
    upstream = scripted(resolver)

    def aliased(request: bytes) -> bytes:
        message = dns.message.from_wire(request)
        response = dns.message.make_response(message)
        name = message.question[0].name
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "dropped.example."))
        response.answer.append(dns.rrset.from_text("dropped.example.", 60, "IN", "A", "192.0.2.66"))
        return response.to_wire()

    upstream.answer = aliased
    (answer,) = forward_all(resolver, upstream, [ask("alias.example", 1)])
    assert answer is None
    assert resolver.stats.outcome_total(metrics.BLOCKED_CNAME) == 1
