"""Response-IP trigger benchmark: the per-answer cost of the longest-prefix match at 1M prefixes,
read through a compiled, memory-mapped index as a worker reads it.

The prefixes mimic a regulator IP list: mostly IPv4 /32 hosts, some /24 and /16 networks, and an
IPv6 share of /128 hosts and /48 and /32 networks. Lookups are random addresses (nearly all
misses, as most answers are) and listed addresses (hits); each figure is the median of a few
passes, in nanoseconds per address. Prints figures; asserts nothing.

    python bench/lpm_bench.py              # 1M prefixes
    python bench/lpm_bench.py --quick      # 100k prefixes (CI smoke)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from resolver.index import IndexData, open_index, save_index  # noqa: E402
from resolver.iptrie import build_tables  # noqa: E402
from resolver.policy import Action, Policy  # noqa: E402

LOOKUPS = 200_000
PASSES = 5


def prefixes(count: int, rng: random.Random) -> tuple[list[tuple[int, int, int]], ...]:
    v4: list[tuple[int, int, int]] = []
    v6: list[tuple[int, int, int]] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.75:
            v4.append((rng.getrandbits(32), 32, 1))
        elif roll < 0.85:
            v4.append((rng.getrandbits(24) << 8, 24, 1))
        elif roll < 0.87:
            v4.append((rng.getrandbits(16) << 16, 16, 1))
        elif roll < 0.95:
            v6.append(((0x2000 | rng.getrandbits(12)) << 112 | rng.getrandbits(112), 128, 1))
        elif roll < 0.99:
            v6.append(((0x2000 | rng.getrandbits(12)) << 112 | rng.getrandbits(32) << 80, 48, 1))
        else:
            v6.append(((0x2000 | rng.getrandbits(12)) << 112 | rng.getrandbits(16) << 96, 32, 1))
    return v4, v6


def per_lookup(match: object, addresses: list[bytes]) -> float:
    times = []
    for _ in range(PASSES):
        started = time.perf_counter()
        for packed in addresses:
            match(packed)  # type: ignore[operator]
        times.append((time.perf_counter() - started) / len(addresses) * 1e9)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k prefixes")
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    args = parser.parse_args()
    count = 100_000 if args.quick else args.prefixes
    rng = random.Random(22)
    v4, v6 = prefixes(count, rng)
    started = time.perf_counter()
    tables = build_tables(v4, v6, [0, 1])
    build = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        import numpy as np

        path = Path(tmp) / "lpm.blkx"
        data = IndexData(
            np.empty(0, dtype=np.uint64),
            np.empty(0, dtype=np.uint16),
            np.empty(0, dtype=np.uint16),
            [Policy("ips", "bench", Action.NXDOMAIN)],
            ip_tables=tables,
        )
        size = save_index(data, path)
        with open_index(path) as index:
            match = index.ip_match.match_packed
            n = min(LOOKUPS, len(v4), len(v6)) if not args.quick else 50_000
            misses4 = [rng.getrandbits(32).to_bytes(4) for _ in range(n)]
            hits4 = [network.to_bytes(4) for network, _, _ in rng.sample(v4, min(n, len(v4)))]
            misses6 = [
                ((0x2000 | rng.getrandbits(12)) << 112 | rng.getrandbits(112)).to_bytes(16)
                for _ in range(n)
            ]
            hits6 = [network.to_bytes(16) for network, _, _ in rng.sample(v6, min(n, len(v6)))]
            assert all(match(p) for p in hits4[:1000]) and all(match(p) for p in hits6[:1000])
            figures = {
                "ipv4 random (ns)": per_lookup(match, misses4),
                "ipv4 listed (ns)": per_lookup(match, hits4),
                "ipv6 random (ns)": per_lookup(match, misses6),
                "ipv6 listed (ns)": per_lookup(match, hits6),
            }
    ranges = len(tables.v4_start) + len(tables.v6_hi)
    print(f"prefixes: {count} ({len(v4)} IPv4, {len(v6)} IPv6) -> {ranges} ranges")
    print(f"build: {build:.2f} s; index file {size / 1e6:.1f} MB (LPM columns and header)")
    for name, value in figures.items():
        print(f"{name:>18}: {value:7.0f} per answer address (median of {PASSES} passes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
