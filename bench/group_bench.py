"""Client-group lookup benchmark: what the shadowed-entries table (docs/groups.md) costs.

Two blocklists: `national` with N names and `family`, which repeats a share of them (those
entries lose to national's at the same name: shadowed) and adds as many names of its own.
Prints the index file size and the size of its shadowed-entries sections, and the lookup cost
per name (median of runs) of the default lookup and of a group's lookup that takes only
`family` (the side table is read at every shadowed name) or only `national` (never read).
Prints figures; asserts nothing. Runs against an index of either format (the figures of the
side table are then absent).

    python bench/group_bench.py                # 1M names, 1% shadowed
    python bench/group_bench.py --quick        # 100k names (CI smoke)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import resolver  # noqa: E402
from bench.workload import synthetic_names  # noqa: E402
from resolver.compile import compile_lists, write_index  # noqa: E402
from resolver.index import open_index  # noqa: E402
from resolver.lists.model import ListSpec  # noqa: E402
from resolver.policy import Action  # noqa: E402

SAMPLE = 100_000
RUNS = 7


def build(
    workdir: Path, count: int, share: float
) -> tuple[Path, list[bytes], list[bytes], list[bytes]]:
    """The index, the shadowed names (in both lists), as many names only national lists and
    as many only family lists."""
    names = synthetic_names(count, seed=7)
    shadowed = names[: int(count * share)]
    own = synthetic_names(len(shadowed), seed=8, first_serial=count)
    (workdir / "national.txt").write_text("\n".join(names) + "\n")
    (workdir / "family.txt").write_text("\n".join(shadowed + own) + "\n")
    specs = [
        ListSpec(name=n, path=str(workdir / f"{n}.txt"), action=Action.NXDOMAIN, list_index=i)
        for i, n in enumerate(("national", "family"))
    ]
    path = workdir / "index.blkx"
    write_index(compile_lists(specs), path)
    national_only = names[-len(shadowed) :]
    encoded = [[n.encode() for n in part] for part in (shadowed, national_only, own)]
    return path, encoded[0], encoded[1], encoded[2]


def per_lookup_ns(cases: dict[str, tuple[Callable[[bytes], int], list[bytes]]]) -> dict[str, float]:
    """Median ns per lookup of each case; every run times every case in turn, so that the load
    of a shared machine spreads over all of them alike."""
    runs: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(RUNS):
        for label, (lookup, queries) in cases.items():
            t0 = time.perf_counter()
            for q in queries:
                lookup(q)
            runs[label].append((time.perf_counter() - t0) / len(queries) * 1e9)
    return {label: statistics.median(times) for label, times in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k names (CI smoke)")
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--shadowed", type=float, default=0.01, help="share in both lists")
    args = parser.parse_args()
    count = 100_000 if args.quick else args.names
    with tempfile.TemporaryDirectory(prefix="blokir-group-bench-") as tmp:
        path, shadowed, national, family = build(Path(tmp), count, args.shadowed)
        index = open_index(path)
        sections = index.header["sections"]
        side = sum(sections[s][1] for s in sections if s.startswith("shadow_"))
        policy_of = {p.list_name: pid for pid, p in enumerate(index.policies, start=1)}

        def group(*lists: str) -> bytes:
            return bytes([0] + [p.list_name in lists for p in index.policies])

        fam, nat = group("family"), group("national")
        misses = [b"www.miss-%d.example" % i for i in range(len(shadowed))]
        figures: dict[str, object] = {
            "names": count,
            "shadowed": len(shadowed),
            "native": resolver.NATIVE,
            "index_bytes": path.stat().st_size,
            "shadow_section_bytes": side,
            "family_sees_shadowed": index.match_policy_id_in(shadowed[0], fam)
            == policy_of["family"],
        }
        match_in = index.match_policy_id_in
        cases: dict[str, tuple[Callable[[bytes], int], list[bytes]]] = {}
        workloads = (("shadowed", shadowed), ("national", national), ("family", family))
        for label, names in (*workloads, ("miss", misses)):
            queries = (names * (SAMPLE // len(names) + 1))[:SAMPLE]
            cases[f"default_{label}_ns"] = (index.match_policy_id, queries)
            cases[f"group_family_{label}_ns"] = (lambda q: match_in(q, fam), queries)
            cases[f"group_national_{label}_ns"] = (lambda q: match_in(q, nat), queries)
        figures.update(per_lookup_ns(cases))
        index.close()
    for key, value in figures.items():
        print(f"{key:32} {round(value, 1) if isinstance(value, float) else value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
