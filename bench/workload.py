"""Reproducible synthetic workloads: block lists shaped like a regulator's list, from a seed.

Names mix gambling/lending/shop-like words with digits, 10-20% carry a `www.`/`m.` style prefix,
and TLDs follow a skewed mix dominated by .com and Indonesia's second-level zones. The same seed
and size always give the same file, so runs on different days compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

WORDS = [
    "judi",
    "slot",
    "gacor",
    "toto",
    "togel",
    "poker",
    "casino",
    "bet",
    "win",
    "maxwin",
    "pinjol",
    "dana",
    "kilat",
    "cair",
    "tunai",
    "kredit",
    "pinjam",
    "uang",
    "toko",
    "obat",
    "murah",
    "asli",
    "resmi",
    "promo",
    "bonus",
    "jackpot",
    "hoki",
    "raja",
    "naga",
    "emas",
    "sakti",
    "sultan",
    "vip",
    "pro",
    "online",
    "link",
    "alternatif",
    "daftar",
    "login",
    "situs",
    "agen",
    "bandar",
]
TLDS = ["com", "net", "org", "xyz", "info", "online", "site", "top", "co.id", "id", "biz", "vip"]
TLD_WEIGHTS = [0.38, 0.1, 0.04, 0.08, 0.05, 0.07, 0.06, 0.06, 0.06, 0.04, 0.03, 0.03]
PREFIXES = ["www", "m", "login", "link", "daftar"]


def synthetic_names(count: int, seed: int, first_serial: int = 0) -> list[str]:
    """`count` distinct names (each carries a serial number, so no two collide)."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    first = words[rng.integers(0, len(WORDS), count)]
    second = words[rng.integers(0, len(WORDS), count)]
    tlds = np.array(TLDS)[rng.choice(len(TLDS), size=count, p=TLD_WEIGHTS)]
    prefix_draw = rng.random(count)
    prefixes = np.array(PREFIXES)[rng.integers(0, len(PREFIXES), count)]
    names = []
    for i in range(count):
        base = f"{first[i]}{second[i]}{first_serial + i}.{tlds[i]}"
        names.append(f"{prefixes[i]}.{base}" if prefix_draw[i] < 0.15 else base)
    return names


def write_list(path: Path, count: int, seed: int) -> Path:
    """Write (or reuse) the list file for (count, seed)."""
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        step = 1_000_000
        for start in range(0, count, step):
            chunk = synthetic_names(min(step, count - start), seed + start, first_serial=start)
            out.write("\n".join(chunk))
            out.write("\n")
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("count", type=int)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=20251)
    args = parser.parse_args()
    write_list(args.output, args.count, args.seed)


if __name__ == "__main__":
    main()
