"""Longest-prefix match over IPv4 and IPv6 for response-IP triggers.

Listed prefixes either nest or are disjoint, so at build time they flatten into disjoint ranges
that cover the whole address space, each carrying the policy id of the longest prefix covering
it (0 = none) and that prefix's length. A lookup is then one `bisect` over the sorted range
starts: no per-length probing, no pointers, and the arrays are plain little-endian columns that
live in the compiled index file, so every worker maps the same pages.

Measured with bench/lpm_bench.py: at 100k prefixes 0.4 us per IPv4 and 0.6-1.1 us per IPv6
answer address; 1M prefixes cost a few more probes per bisect (docs/ip-triggers.md has the
figures). Per-prefix-length hash sets measured no faster for IPv4 with four lengths in use and
grow with the number of lengths (up to 33 / 129 probes), and as Python sets they cost each
worker about 60 MB instead of sharing the mapped columns.

A directory of 2^16 + 1 offsets per family, indexed by the address's top 16 bits, narrows the
bisect to the ranges starting under those bits: measured 1.5-2x faster per lookup at 1M
prefixes, for 256 KiB per family.

IPv6 starts are two uint64 columns (high and low halves; the standard library has no 128-bit
array): `bisect` on the high half, then on the low half among the ranges sharing it. IPv4-mapped
IPv6 addresses (::ffff:a.b.c.d, RFC 4291 2.5.5.2) in an AAAA answer are matched as the IPv4
address they carry, as an IPv4 listing would otherwise be bypassed through AAAA.

Precedence, as for names: the most specific prefix wins; at the same prefix the lower rank
(allowlists, then the first list in config order) wins.
"""

from __future__ import annotations

import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

V4_BITS = 32
V6_BITS = 128
_LOW64 = (1 << 64) - 1
DIR_BITS = 16
_MAPPED_PREFIX = 0xFFFF  # ::ffff:0:0/96, shifted right by 32


@dataclass(slots=True)
class Ranges:
    """One family's flattened ranges: starts ascending from 0, with policy id and prefix length
    per range (0 and 0 where nothing is listed)."""

    starts: list[int]
    pids: list[int]
    lengths: list[int]


def flatten(entries: Iterable[tuple[int, int, int]], bits: int, rank: Sequence[int]) -> Ranges:
    """Prefixes (network as int, length, pid) -> disjoint covering ranges.

    Duplicates of one prefix keep the pid of lowest `rank[pid]`. A sweep in address order with a
    stack of the enclosing prefixes: a prefix's start switches to its pid, its end switches back
    to the enclosing one's."""
    best: dict[tuple[int, int], int] = {}
    for network, length, pid in entries:
        key = (network, length)
        old = best.get(key)
        if old is None or (rank[pid], pid) < (rank[old], old):
            best[key] = pid
    out = Ranges([0], [0], [0])
    stack: list[tuple[int, int, int]] = []  # (last address, pid, length)

    def switch(position: int, pid: int, length: int) -> None:
        if position >> bits:
            return  # past the end of the address space
        if out.starts[-1] == position:
            out.starts.pop()
            out.pids.pop()
            out.lengths.pop()
            if not out.starts:
                out.starts.append(position)
                out.pids.append(pid)
                out.lengths.append(length)
                return
        if out.pids[-1] == pid and out.lengths[-1] == length:
            return
        out.starts.append(position)
        out.pids.append(pid)
        out.lengths.append(length)

    def close_until(position: int) -> None:
        while stack and stack[-1][0] < position:
            last = stack.pop()[0]
            _, pid, length = stack[-1] if stack else (0, 0, 0)
            switch(last + 1, pid, length)

    for (network, length), pid in sorted(best.items()):
        close_until(network)
        stack.append((network | ((1 << (bits - length)) - 1), pid, length))
        switch(network, pid, length)
    close_until(1 << bits)
    return out


@dataclass(slots=True)
class IpTables:
    """Both families' columns, ready to save (`resolver.index`) or to wrap in an IpMatcher."""

    v4_start: array.array[int]
    v4_pid: array.array[int]
    v4_len: array.array[int]
    v6_hi: array.array[int]
    v6_lo: array.array[int]
    v6_pid: array.array[int]
    v6_len: array.array[int]
    v4_dir: array.array[int]
    v6_dir: array.array[int]

    def columns(self) -> list[tuple[str, array.array[int]]]:
        return [
            ("ip4_dir", self.v4_dir),
            ("ip6_dir", self.v6_dir),
            ("ip4_start", self.v4_start),
            ("ip4_pid", self.v4_pid),
            ("ip4_len", self.v4_len),
            ("ip6_hi", self.v6_hi),
            ("ip6_lo", self.v6_lo),
            ("ip6_pid", self.v6_pid),
            ("ip6_len", self.v6_len),
        ]


# Section name -> array typecode (the index maps each as a memoryview of that format).
Format = Literal["B", "H", "I", "Q"]
COLUMN_FORMATS: dict[str, Format] = {
    "ip4_dir": "I",
    "ip6_dir": "I",
    "ip4_start": "I",
    "ip4_pid": "H",
    "ip4_len": "B",
    "ip6_hi": "Q",
    "ip6_lo": "Q",
    "ip6_pid": "H",
    "ip6_len": "B",
}


def build_tables(
    v4: Iterable[tuple[int, int, int]], v6: Iterable[tuple[int, int, int]], rank: Sequence[int]
) -> IpTables:
    four = flatten(v4, V4_BITS, rank)
    six = flatten(v6, V6_BITS, rank)
    v4_start = array.array("I", four.starts)
    v6_hi = array.array("Q", [s >> 64 for s in six.starts])
    return IpTables(
        v4_start,
        array.array("H", four.pids),
        array.array("B", four.lengths),
        v6_hi,
        array.array("Q", [s & _LOW64 for s in six.starts]),
        array.array("H", six.pids),
        array.array("B", six.lengths),
        _directory(v4_start, V4_BITS - DIR_BITS),
        _directory(v6_hi, 64 - DIR_BITS),
    )


def _directory(starts: array.array[int], shift: int) -> array.array[int]:
    """Entry b: the first range starting at or above b << shift (the last entry: the count)."""
    return array.array(
        "I", [bisect_left(starts, bucket << shift) for bucket in range((1 << DIR_BITS) + 1)]
    )


def empty_tables() -> IpTables:
    return build_tables((), (), ())


class IpMatcher:
    """Lookups over mapped (or in-memory) columns. Every column is a sequence of ints indexed
    like the arrays `build_tables` makes; both families always have a range starting at 0."""

    __slots__ = (
        "count",
        "v4_dir",
        "v4_len",
        "v4_pid",
        "v4_start",
        "v6_dir",
        "v6_hi",
        "v6_len",
        "v6_lo",
        "v6_pid",
    )

    def __init__(self, columns: Mapping[str, Sequence[int]]) -> None:
        self.v4_dir = columns["ip4_dir"]
        self.v6_dir = columns["ip6_dir"]
        self.v4_start = columns["ip4_start"]
        self.v4_pid = columns["ip4_pid"]
        self.v4_len = columns["ip4_len"]
        self.v6_hi = columns["ip6_hi"]
        self.v6_lo = columns["ip6_lo"]
        self.v6_pid = columns["ip6_pid"]
        self.v6_len = columns["ip6_len"]
        # Ranges with a policy: 0 means no trigger is listed, and answers need no look at all.
        self.count = sum(1 for pid in self.v4_pid if pid) + sum(1 for pid in self.v6_pid if pid)

    def _slot4(self, address: int) -> int:
        bucket = address >> (V4_BITS - DIR_BITS)
        directory = self.v4_dir
        return bisect_right(self.v4_start, address, directory[bucket], directory[bucket + 1]) - 1

    def _slot6(self, address: int) -> int:
        high = address >> 64
        hi = self.v6_hi
        bucket = high >> (64 - DIR_BITS)
        directory = self.v6_dir
        end = bisect_right(hi, high, directory[bucket], directory[bucket + 1])
        if hi[end - 1] != high:
            return end - 1
        first = bisect_left(hi, high, directory[bucket], end)
        slot = bisect_right(self.v6_lo, address & _LOW64, first, end) - 1
        return slot if slot >= first else first - 1

    def match_v4(self, address: int) -> int:
        return self.v4_pid[self._slot4(address)]

    def match_v6(self, address: int) -> int:
        if address >> 32 == _MAPPED_PREFIX:
            return self.match_v4(address & 0xFFFFFFFF)
        return self.v6_pid[self._slot6(address)]

    def match_packed(self, packed: bytes) -> int:
        """The policy id for an A (4 bytes) or AAAA (16 bytes) rdata; 0 when none applies."""
        if len(packed) == 4:
            address = int.from_bytes(packed)
            bucket = address >> (V4_BITS - DIR_BITS)
            directory = self.v4_dir
            start = self.v4_start
            return self.v4_pid[
                bisect_right(start, address, directory[bucket], directory[bucket + 1]) - 1
            ]
        if len(packed) == 16:
            return self.match_v6(int.from_bytes(packed))
        return 0

    def locate(self, packed: bytes) -> tuple[int, int]:
        """(policy id, length of the listed prefix that decided it) for tools; (0, 0) when no
        prefix covers the address."""
        if len(packed) == 16 and int.from_bytes(packed) >> 32 == _MAPPED_PREFIX:
            packed = packed[12:]
        if len(packed) == 4:
            slot = self._slot4(int.from_bytes(packed))
            return self.v4_pid[slot], self.v4_len[slot]
        if len(packed) == 16:
            slot = self._slot6(int.from_bytes(packed))
            return self.v6_pid[slot], self.v6_len[slot]
        return 0, 0


def matcher_of(tables: IpTables) -> IpMatcher:
    return IpMatcher(dict(tables.columns()))
