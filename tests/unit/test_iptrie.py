"""Longest-prefix match (resolver/iptrie.py) against the standard library's ipaddress as the
reference: the listed prefix that covers an address with the greatest length wins, and at one
prefix the lower rank."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.iptrie import build_tables, flatten, matcher_of

RANK = list(range(64))  # pid p has rank p: lower pid wins a tie


def prefixes(bits: int) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    def one(draw_length: int, address: int, pid: int) -> tuple[int, int, int]:
        mask = ((1 << bits) - 1) ^ ((1 << (bits - draw_length)) - 1)
        return (address & mask, draw_length, pid)

    return st.lists(
        st.builds(
            one,
            st.integers(0, bits),
            st.integers(0, (1 << bits) - 1),
            st.integers(1, 63),
        ),
        max_size=40,
    )


def reference(entries: list[tuple[int, int, int]], address: int, bits: int) -> tuple[int, int]:
    cls = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    best: tuple[int, int] | None = None  # (-length, pid)
    for network, length, pid in entries:
        net = cls((network, length))
        target = net.network_address.__class__(address)
        if target in net and (best is None or (-length, pid) < best):
            best = (-length, pid)
    return (0, 0) if best is None else (best[1], -best[0])


def addresses_near(entries: list[tuple[int, int, int]], bits: int, extra: list[int]) -> list[int]:
    """Range edges are where flattening goes wrong: each prefix's first and last address and the
    ones just outside, plus random ones."""
    out = list(extra)
    top = (1 << bits) - 1
    for network, length, _ in entries:
        last = network | ((1 << (bits - length)) - 1)
        out += [network, last, max(network - 1, 0), min(last + 1, top)]
    return out


@settings(max_examples=300, deadline=None)
@given(prefixes(32), st.lists(st.integers(0, 2**32 - 1), max_size=10))
def test_v4_matches_reference(entries: list[tuple[int, int, int]], extra: list[int]) -> None:
    matcher = matcher_of(build_tables(entries, (), RANK))
    for address in addresses_near(entries, 32, extra):
        expected = reference(entries, address, 32)
        packed = address.to_bytes(4)
        assert matcher.locate(packed) == expected
        assert matcher.match_packed(packed) == expected[0] == matcher.match_v4(address)


@settings(max_examples=300, deadline=None)
@given(prefixes(128), st.lists(st.integers(0, 2**128 - 1), max_size=10))
def test_v6_matches_reference(entries: list[tuple[int, int, int]], extra: list[int]) -> None:
    # Keep generated prefixes out of ::ffff:0:0/96, which is matched as IPv4 (tested below).
    entries = [e for e in entries if (e[0] >> 32) != 0xFFFF]
    matcher = matcher_of(build_tables((), entries, RANK))
    for address in addresses_near(entries, 128, extra):
        if address >> 32 == 0xFFFF:
            continue
        expected = reference(entries, address, 128)
        assert matcher.locate(address.to_bytes(16)) == expected
        assert matcher.match_packed(address.to_bytes(16)) == expected[0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=5), st.integers(0, 2**64 - 1))
def test_v6_prefixes_sharing_the_high_half(highs: list[int], low: int) -> None:
    """Many /128s under one /64: the second bisect (on the low half) decides."""
    entries = [((highs[0] << 64) | (low ^ i), 128, 1 + i % 5) for i in range(20)]
    entries.append(((highs[0] << 64), 64, 9))
    matcher = matcher_of(build_tables((), entries, RANK))
    for address in addresses_near(entries, 128, [(h << 64) | low for h in highs]):
        assert matcher.locate(address.to_bytes(16)) == reference(entries, address, 128)


def test_mapped_ipv6_is_matched_as_ipv4() -> None:
    net = int(ipaddress.IPv4Address("192.0.2.0"))
    matcher = matcher_of(build_tables([(net, 24, 3)], (), RANK))
    mapped = ipaddress.IPv6Address("::ffff:192.0.2.77").packed
    assert matcher.match_packed(mapped) == 3
    assert matcher.locate(mapped) == (3, 24)
    assert matcher.match_packed(ipaddress.IPv6Address("::ffff:192.0.3.1").packed) == 0


def test_equal_prefix_lower_rank_wins_and_ranges_merge() -> None:
    rank = [0, 5, 1, 9]  # pid 2 outranks pid 1 and 3
    ranges = flatten([(0x0A000000, 8, 1), (0x0A000000, 8, 2), (0x0A000000, 8, 3)], 32, rank)
    assert ranges.starts == [0, 0x0A000000, 0x0B000000]
    assert ranges.pids == [0, 2, 0]
    # A nested prefix with the same pid and length as its neighbour never splits ranges.
    whole = flatten([(0, 0, 1), (0x0A000000, 8, 1)], 32, rank)
    assert whole.pids[0] == 1 and whole.lengths[0] == 0


def test_empty_tables_match_nothing() -> None:
    matcher = matcher_of(build_tables((), (), RANK))
    assert matcher.count == 0
    assert matcher.match_packed(bytes(4)) == 0 == matcher.match_packed(bytes(16))
    assert matcher.match_packed(b"\xff" * 16) == 0
    assert matcher.match_packed(b"abc") == 0
