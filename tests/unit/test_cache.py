"""The response cache: lifetimes, TTL rewriting, negative caching, bounds, counters."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Sequence

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver.cache import ENTRY_OVERHEAD, CacheLimits, ResponseCache, with_edns_option
from resolver.dns.message import walk
from resolver.dns.response import ede_option

SOA = "ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 {minimum}"
KEY = (b"www.example.com", 1, 1, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(clock: FakeClock, **kw: int) -> ResponseCache:
    limits = {
        "max_entries": 100,
        "max_bytes": 1 << 20,
        "min_ttl": 0,
        "max_ttl": 86_400,
        "negative_ttl_max": 3_600,
        "servfail_ttl": 5,
    }
    limits.update(kw)
    return ResponseCache(CacheLimits(**limits), clock=clock)


def _response(
    answer: Sequence[tuple[str, int, str, str]] = (),
    authority: Sequence[tuple[str, int, str, str]] = (),
    additional: Sequence[tuple[str, int, str, str]] = (),
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    qname: str = "www.example.com.",
) -> bytes:
    query = dns.message.make_query(qname, "A", use_edns=True, want_dnssec=True)
    response = dns.message.make_response(query)
    response.use_edns(0, dns.flags.DO, 1232)
    response.set_rcode(rcode)
    for section, rows in (
        (response.answer, answer),
        (response.authority, authority),
        (response.additional, additional),
    ):
        for name, ttl, rtype, text in rows:
            section.append(dns.rrset.from_text(name, ttl, "IN", rtype, text))
    return response.to_wire()


def _ttls(wire: bytes) -> list[int]:
    """Every TTL except OPT's, as dnspython reads them."""
    message = dns.message.from_wire(wire)
    return [
        rrset.ttl for s in (message.answer, message.authority, message.additional) for rrset in s
    ]


POSITIVE = _response(
    answer=[
        ("www.example.com.", 300, "CNAME", "edge.example.net."),
        ("edge.example.net.", 120, "A", "192.0.2.1"),
    ],
    authority=[("example.net.", 3600, "NS", "ns1.example.net.")],
    additional=[("ns1.example.net.", 7200, "A", "192.0.2.53")],
)


# -- lifetimes and TTL rewriting ------------------------------------------------------------


def test_hit_counts_ttls_down_and_keeps_everything_else() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    assert cache.put(KEY, POSITIVE)
    assert cache.get(KEY) is POSITIVE  # nothing to rewrite in the first second
    clock.now += 0.999
    assert cache.get(KEY) is POSITIVE
    clock.now += 29.5  # 30.499 s after storing
    aged = cache.get(KEY)
    assert aged is not None and len(aged) == len(POSITIVE)
    assert _ttls(aged) == [270, 90, 3570, 7170]
    assert aged[:12] == POSITIVE[:12]  # ID and flags untouched
    # OPT's TTL field (extended RCODE, version, DO flag) is not a TTL and must not change
    assert dns.message.from_wire(aged).ednsflags & dns.flags.DO
    # only the TTL fields differ
    offsets = {r.ttl_offset + i for r in walk(POSITIVE)[1] if r.rtype != 41 for i in range(4)}
    assert all(aged[i] == POSITIVE[i] for i in range(len(aged)) if i not in offsets)


def test_same_second_returns_the_same_object() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    cache.put(KEY, POSITIVE)
    clock.now += 10.2
    first = cache.get(KEY)
    clock.now += 0.5
    assert cache.get(KEY) is first
    clock.now += 0.4  # 11.1 s: the next whole second
    second = cache.get(KEY)
    assert second is not first and second is not None
    assert _ttls(second) == [289, 109, 3589, 7189]


def test_expiry_at_the_smallest_ttl() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    cache.put(KEY, POSITIVE)  # min over answer + authority = 120 (additional is not counted)
    clock.now += 119.9
    last = cache.get(KEY)
    assert last is not None and _ttls(last)[1] == 1
    clock.now += 0.1
    assert cache.get(KEY) is None
    assert len(cache) == 0 and cache.bytes_used == 0
    assert (cache.hits, cache.misses, cache.expired) == (1, 1, 1)


def test_min_and_max_ttl_clamp_the_lifetime() -> None:
    clock = FakeClock()
    short = _response(answer=[("www.example.com.", 5, "A", "192.0.2.1")])
    cache = _cache(clock, min_ttl=30)
    cache.put(KEY, short)
    clock.now += 20
    aged = cache.get(KEY)
    assert aged is not None and _ttls(aged) == [0]  # served past its TTL, never below 0
    clock.now += 10
    assert cache.get(KEY) is None

    long = _response(answer=[("www.example.com.", 604_800, "A", "192.0.2.1")])
    cache = _cache(clock, max_ttl=60)
    cache.put(KEY, long)
    clock.now += 59
    assert cache.get(KEY) is not None
    clock.now += 1
    assert cache.get(KEY) is None


def test_zero_ttl_is_not_cached() -> None:
    cache = _cache(FakeClock())
    assert not cache.put(KEY, _response(answer=[("www.example.com.", 0, "A", "192.0.2.1")]))
    assert len(cache) == 0 and cache.inserts == 0


def test_ttl_with_the_top_bit_set_counts_as_zero() -> None:
    wire = bytearray(
        _response(
            answer=[
                ("www.example.com.", 300, "A", "192.0.2.1"),
                ("www.example.com.", 300, "TXT", "x"),
            ]
        )
    )
    struct.pack_into("!I", wire, walk(bytes(wire))[1][1].ttl_offset, 0x80000001)
    clock = FakeClock()
    assert not _cache(clock).put(KEY, bytes(wire))  # lifetime 0
    cache = _cache(clock, min_ttl=10)
    assert cache.put(KEY, bytes(wire))
    served = cache.get(KEY)
    assert served is not None and _ttls(served) == [300, 0]


# -- negative answers ------------------------------------------------------------------------


def test_nxdomain_and_nodata_use_the_soa() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    nx = _response(
        rcode=dns.rcode.NXDOMAIN,
        authority=[("example.com.", 900, "SOA", SOA.format(minimum=60))],
    )
    nodata = _response(authority=[("example.com.", 45, "SOA", SOA.format(minimum=600))])
    nodata_key = (b"www.example.com", 28, 1, 0)
    assert cache.put(KEY, nx)
    assert cache.put(nodata_key, nodata)
    clock.now += 44.5
    aged = cache.get(nodata_key)
    assert aged is not None and _ttls(aged) == [1]
    clock.now += 0.5
    assert cache.get(nodata_key) is None  # min(45, 600)
    assert cache.get(KEY) is not None
    clock.now += 15
    assert cache.get(KEY) is None  # min(900, 60)


def test_negative_ttl_max_caps_and_cname_chain_limits() -> None:
    clock = FakeClock()
    nx = _response(
        rcode=dns.rcode.NXDOMAIN,
        authority=[("example.com.", 86_400, "SOA", SOA.format(minimum=86_400))],
    )
    cache = _cache(clock, negative_ttl_max=10)
    assert cache.put(KEY, nx)
    clock.now += 9.5
    assert cache.get(KEY) is not None
    clock.now += 0.5
    assert cache.get(KEY) is None

    via_cname = _response(
        rcode=dns.rcode.NXDOMAIN,
        answer=[("www.example.com.", 20, "CNAME", "gone.example.net.")],
        authority=[("example.net.", 900, "SOA", SOA.format(minimum=900))],
    )
    cache = _cache(clock)
    assert cache.put(KEY, via_cname)
    clock.now += 20
    assert cache.get(KEY) is None  # the CNAME's 20 s, not the SOA's 900


def test_negative_without_soa_is_not_cached() -> None:
    cache = _cache(FakeClock())
    assert not cache.put(KEY, _response(rcode=dns.rcode.NXDOMAIN))
    referral = _response(authority=[("example.com.", 3600, "NS", "ns1.example.com.")])
    assert not cache.put(KEY, referral)
    assert not cache.put(
        KEY,
        _response(
            rcode=dns.rcode.NXDOMAIN,
            authority=[("example.com.", 0, "SOA", SOA.format(minimum=300))],
        ),
    )
    assert len(cache) == 0


def test_servfail_short_ttl_and_off_switch() -> None:
    clock = FakeClock()
    servfail = _response(rcode=dns.rcode.SERVFAIL)
    cache = _cache(clock, servfail_ttl=5)
    assert cache.put(KEY, servfail)
    clock.now += 4.9
    assert cache.get(KEY) == servfail
    clock.now += 0.1
    assert cache.get(KEY) is None
    assert not _cache(clock, servfail_ttl=0).put(KEY, servfail)


# -- not cacheable ---------------------------------------------------------------------------


def test_uncacheable_responses() -> None:
    cache = _cache(FakeClock())
    truncated = bytearray(POSITIVE)
    truncated[2] |= 0x02
    assert not cache.put(KEY, bytes(truncated))
    query = bytearray(POSITIVE)
    query[2] &= 0x7F
    assert not cache.put(KEY, bytes(query))
    notify = bytearray(POSITIVE)
    notify[2] |= 4 << 3
    assert not cache.put(KEY, bytes(notify))
    for rcode in (dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.REFUSED):
        refused = _response(
            rcode=rcode, authority=[("example.com.", 900, "SOA", SOA.format(minimum=60))]
        )
        assert not cache.put(KEY, refused)
    badvers = dns.message.make_response(dns.message.make_query("www.example.com.", "A", use_edns=0))
    badvers.set_rcode(dns.rcode.BADVERS)
    badvers.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    assert not cache.put(KEY, badvers.to_wire())
    for junk in (b"", b"\x00" * 11, POSITIVE[:-1], POSITIVE + b"\x00"):
        assert not cache.put(KEY, junk)
    assert len(cache) == 0 and cache.inserts == 0


def test_tsig_signed_responses_are_not_cached() -> None:
    import dns.tsigkeyring

    keyring = dns.tsigkeyring.from_text({"key.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    query = dns.message.make_query("www.example.com.", "A")
    query.use_tsig(keyring, keyname="key.")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    assert not _cache(FakeClock()).put(KEY, response.to_wire())


# -- bounds and counters ---------------------------------------------------------------------


def _key(i: int) -> tuple[bytes, int, int, int]:
    return (b"host%d.example.com" % i, 1, 1, 0)


def test_lru_eviction_by_entries() -> None:
    clock = FakeClock()
    cache = _cache(clock, max_entries=3)
    for i in range(3):
        assert cache.put(_key(i), POSITIVE)
    assert cache.get(_key(0)) is not None  # 0 is now the most recently used
    assert cache.put(_key(3), POSITIVE)
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.get(_key(1)) is None  # the least recently used went
    assert all(cache.get(_key(i)) is not None for i in (0, 2, 3))


def test_lru_eviction_by_bytes() -> None:
    size = len(POSITIVE) + ENTRY_OVERHEAD
    cache = _cache(FakeClock(), max_bytes=size * 2 + size // 2)
    for i in range(3):
        assert cache.put(_key(i), POSITIVE)
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.bytes_used == 2 * size
    assert cache.get(_key(0)) is None
    # a response that can never fit is refused, and nothing is evicted for it
    assert not _cache(FakeClock(), max_bytes=size - 1).put(KEY, POSITIVE)


def test_replacing_a_key_is_not_an_eviction() -> None:
    clock = FakeClock()
    cache = _cache(clock, max_entries=2)
    other = _response(answer=[("www.example.com.", 60, "A", "192.0.2.9")])
    cache.put(KEY, POSITIVE)
    cache.put(KEY, other)
    assert len(cache) == 1 and cache.evictions == 0 and cache.inserts == 2
    assert cache.bytes_used == len(other) + ENTRY_OVERHEAD
    assert cache.get(KEY) is other


def test_zero_entries_disables_the_cache() -> None:
    cache = _cache(FakeClock(), max_entries=0)
    assert not cache.put(KEY, POSITIVE)
    assert cache.get(KEY) is None
    assert len(cache) == 0 and cache.misses == 1


def test_counters_and_clear() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    assert cache.get(KEY) is None
    cache.put(KEY, POSITIVE)
    cache.put(_key(1), POSITIVE)
    cache.get(KEY)
    cache.get(KEY)
    assert (cache.hits, cache.misses, cache.inserts, cache.evictions, cache.expired) == (
        2,
        1,
        2,
        0,
        0,
    )
    assert cache.bytes_used == 2 * (len(POSITIVE) + ENTRY_OVERHEAD)
    cache.clear()
    assert len(cache) == 0 and cache.bytes_used == 0 and cache.get(KEY) is None


def test_keys_are_distinct_by_type_class_and_flags() -> None:
    cache = _cache(FakeClock())
    cache.put(KEY, POSITIVE)
    for other in (
        (b"www.example.com", 28, 1, 0),
        (b"www.example.com", 1, 3, 0),
        (b"www.example.com", 1, 1, 1),
    ):
        assert cache.get(other) is None


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        _cache(FakeClock(), min_ttl=100, max_ttl=10)
    with pytest.raises(ValueError):
        _cache(FakeClock(), max_bytes=-1)


# -- serve-stale (RFC 8767) ------------------------------------------------------------------


def test_expired_entries_are_kept_for_max_stale_and_served_with_the_stale_ttl() -> None:
    clock = FakeClock()
    cache = _cache(clock, max_stale=600)
    assert cache.put(KEY, POSITIVE)  # lives 120 s, the smallest answer/authority TTL
    assert cache.get_stale(KEY, 30) is None  # fresh: not get_stale's business
    clock.now += 120
    assert cache.get(KEY) is None and len(cache) == 1  # a miss, but kept
    stale = cache.get_stale(KEY, 30)
    assert stale is not None and _ttls(stale) == [30, 30, 30, 30]
    assert stale[2:] != POSITIVE[2:] and len(stale) == len(POSITIVE)
    assert dns.message.from_wire(stale).answer == dns.message.from_wire(POSITIVE).answer
    assert cache.stale_hits == 1
    clock.now += 599
    assert cache.get_stale(KEY, 30) is not None
    clock.now += 1  # max_stale past expiry
    assert cache.get_stale(KEY, 30) is None
    assert cache.get(KEY) is None and len(cache) == 0 and cache.expired == 1
    assert cache.bytes_used == 0


def test_without_max_stale_expired_entries_go_at_once() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    cache.put(KEY, POSITIVE)
    clock.now += 120
    assert cache.get_stale(KEY, 30) is None
    assert cache.get(KEY) is None and len(cache) == 0


def test_servfail_is_never_served_stale() -> None:
    clock = FakeClock()
    cache = _cache(clock, max_stale=600)
    assert cache.put(KEY, _response(rcode=dns.rcode.SERVFAIL))
    clock.now += 5
    assert cache.get_stale(KEY, 30) is None


def test_stale_negative_answers_are_served_too() -> None:
    clock = FakeClock()
    cache = _cache(clock, max_stale=600)
    nx = _response(
        authority=[("example.com.", 3600, "SOA", SOA.format(minimum=60))],
        rcode=dns.rcode.NXDOMAIN,
    )
    assert cache.put(KEY, nx)
    clock.now += 61
    stale = cache.get_stale(KEY, 30)
    assert stale is not None and dns.message.from_wire(stale).rcode() == dns.rcode.NXDOMAIN
    assert _ttls(stale) == [30]


def test_stale_entries_count_against_the_bounds_and_are_evicted_first() -> None:
    clock = FakeClock()
    size = len(POSITIVE) + ENTRY_OVERHEAD
    cache = _cache(clock, max_entries=3, max_bytes=3 * size, max_stale=86_400)
    for i in range(3):
        cache.put(_key(i), POSITIVE)
    clock.now += 200  # all expired, all kept for serve-stale
    assert cache.get(_key(0)) is None  # a miss does not refresh its LRU place
    for i in range(3, 6):
        cache.put(_key(i), POSITIVE)
    assert len(cache) == 3 and cache.bytes_used == 3 * size and cache.evictions == 3
    assert all(cache.get_stale(_key(i), 30) is None for i in range(3))


def test_with_edns_option_appends_to_an_existing_opt_or_adds_one() -> None:
    option = ede_option(3, "stale")
    with_opt = with_edns_option(POSITIVE, option, 1232, True)
    message = dns.message.from_wire(with_opt)
    assert [o.code for o in message.options] == [dns.edns.EDECode.STALE_ANSWER]  # type: ignore[attr-defined]
    assert (
        message.ednsflags & dns.flags.DO
        and message.answer == dns.message.from_wire(POSITIVE).answer
    )
    plain_query = dns.message.make_query("www.example.com.", "A")
    plain = dns.message.make_response(plain_query).to_wire()
    added = dns.message.from_wire(with_edns_option(plain, option, 1232, False))
    assert added.edns == 0 and added.payload == 1232 and not added.ednsflags & dns.flags.DO
    assert len(added.options) == 1


# -- a flood of unique names (water torture) -------------------------------------------------


@pytest.mark.parametrize("max_stale", [0, 86_400])
def test_bounds_hold_under_a_flood_of_unique_names(max_stale: int) -> None:
    """50k unique names through a cache bounded at 2000 entries and 1.5 MB: the bounds hold
    after every insert; then memory traced over one more full turnover of the cache stays near
    what the byte bound charges."""
    clock = FakeClock()
    max_entries, max_bytes = 2000, 1_500_000
    cache = _cache(clock, max_entries=max_entries, max_bytes=max_bytes, max_stale=max_stale)
    template = _response(
        authority=[("victim.example.", 3600, "SOA", SOA.format(minimum=300))],
        rcode=dns.rcode.NXDOMAIN,
        qname="x00000000.victim.example.",
    )
    assert template.count(b"x00000000") == 1  # the SOA owner is a pointer to the suffix

    def flood(first: int, count: int) -> None:
        for i in range(first, first + count):
            label = b"x%08x" % (i * 2654435761 % (1 << 32))  # unique, in no particular order
            assert cache.put(
                (label + b".victim.example", 1, 1, 0), template.replace(b"x00000000", label)
            )
            assert len(cache) <= max_entries and cache.bytes_used <= max_bytes
            if i % 1000 == 999:
                clock.now += 10  # entries expire while the flood goes on

    flood(0, 50_000)
    entry_size = len(template) + ENTRY_OVERHEAD
    assert len(cache) == min(max_entries, max_bytes // entry_size)
    assert cache.evictions + cache.expired == 50_000 - len(cache)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        flood(50_000, 3 * max_entries // 2)  # replaces every entry: all held memory is traced
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # ENTRY_OVERHEAD is measured, so what the cache charges covers what it really holds
    # (about 1.0 MB held for 1.5 MB charged here, with these small NXDOMAIN answers).
    assert held <= cache.bytes_used <= max_bytes, (held, cache.bytes_used)


def test_smaller_limits_evict_the_oldest_at_once_and_bad_ones_are_refused() -> None:
    clock = FakeClock()
    cache = _cache(clock)
    for i in range(4):
        name = f"n{i}.example.com."
        cache.put((name.encode(), 1, 1, 0), _response([(name, 300, "A", "192.0.2.1")], qname=name))
    size = cache.bytes_used // 4
    cache.set_limits(CacheLimits(100, 2 * size, 0, 86_400, 3_600, 5))
    assert len(cache) == 2 and cache.evictions == 2
    assert cache.get((b"n3.example.com.", 1, 1, 0)) is not None
    assert cache.get((b"n0.example.com.", 1, 1, 0)) is None
    with pytest.raises(ValueError, match="max_ttl"):
        cache.set_limits(CacheLimits(100, 1 << 20, 600, 60, 3_600, 5))
    assert cache.max_bytes == 2 * size  # a refused change leaves the limits as they were
