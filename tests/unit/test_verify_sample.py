"""The sample: stratified by list (and so by category), reproducible with a seed, only names the
index blocks, and the index's source lists checked by sha256."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.compile import compile_lists, spec_json, write_index
from resolver.config import load_config
from resolver.lists.model import ListSpec
from resolver.policy import Action, Ede, MatchMode
from resolver.verify.sample import (
    PROBE_NAME,
    PROBE_RANDOM,
    PROBE_WWW,
    RANDOM_LABEL_PREFIX,
    SampleError,
    allocate,
    draw_sample,
    file_sha256,
    open_source,
    spec_from_json,
)


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}.example" for i in range(count)]


def write(path: Path, entries: list[str]) -> str:
    path.write_text("\n".join(entries) + "\n")
    return str(path)


def test_allocate_proportional_with_minimum_and_caps() -> None:
    assert allocate(90, [120, 60], [90, 60]) == [60, 30]
    assert allocate(10, [1000, 1], [10, 1]) == [9, 1]  # the tiny list still gets one
    assert allocate(3, [5, 5, 5, 5], [5, 5, 5, 5]) == [1, 1, 1, 0]  # fewer than the strata
    assert allocate(100, [50, 50], [10, 50]) == [10, 50]  # capped: the rest goes elsewhere
    assert allocate(100, [1, 1], [3, 4]) == [3, 4]  # more asked than there is
    assert allocate(5, [0, 10], [0, 10]) == [0, 5]


@given(
    st.integers(min_value=1, max_value=500),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=8),
)
def test_allocate_invariants(total: int, sizes: list[int]) -> None:
    shares = allocate(total, [float(s) for s in sizes], sizes)
    assert sum(shares) == min(total, sum(sizes))
    assert all(0 <= share <= size for share, size in zip(shares, sizes, strict=True))
    non_empty = [i for i, s in enumerate(sizes) if s]
    if total >= len(non_empty):
        assert all(shares[i] >= 1 for i in non_empty)


def test_sample_is_stratified_and_reproducible(tmp_path: Path) -> None:
    big = write(tmp_path / "big.txt", names("big", 300))
    small = write(tmp_path / "small.txt", names("small", 100))
    with open_source(lists=[big, small]) as source:
        first = draw_sample(source, 40, seed=42)
        again = draw_sample(source, 40, seed=42)
        other = draw_sample(source, 40, seed=43)
    assert first.domains == again.domains  # names, strata and random labels alike
    assert [d.name for d in first.domains] != [d.name for d in other.domains]
    per_list = Counter(d.list_name for d in first.domains)
    assert per_list == {"big": 30, "small": 10}
    assert len({d.name for d in first.domains}) == 40
    assert [s.sampled for s in first.strata] == [30, 10]
    assert [s.entries for s in first.strata] == [300, 100]
    domain = first.domains[0]
    kinds = [kind for kind, _ in domain.probes]
    assert kinds == [PROBE_NAME, PROBE_WWW, PROBE_RANDOM]
    random_name = dict(domain.probes)[PROBE_RANDOM]
    assert random_name.startswith(RANDOM_LABEL_PREFIX) and random_name.endswith(domain.name)
    assert first.seed == 42 and first.to_json()["drawn"] == 40


def test_seed_is_drawn_and_recorded(tmp_path: Path) -> None:
    listed = write(tmp_path / "l.txt", names("x", 50))
    with open_source(lists=[listed]) as source:
        sample = draw_sample(source, 10)
        replay = draw_sample(source, 10, seed=sample.seed)
    assert sample.domains == replay.domains


def test_all_takes_every_name_once(tmp_path: Path) -> None:
    listed = write(tmp_path / "l.txt", [*names("x", 30), "x1.example", "X2.Example."])
    with open_source(lists=[listed]) as source:
        sample = draw_sample(source, None, seed=1)
    assert sorted(d.name for d in sample.domains) == sorted(names("x", 30))
    assert sample.to_json()["requested"] == "all"


def test_config_lists_allowlists_and_exact_scope(tmp_path: Path) -> None:
    write(tmp_path / "allow.txt", ["ok.example", "fine.block0.example"])
    write(tmp_path / "block.txt", [*names("block", 20), "ok.example"])
    write(tmp_path / "exact.txt", names("exact", 10))
    config = tmp_path / "blokir.toml"
    config.write_text(
        """
[blocking]
landing_ipv4 = "192.0.2.10"
index_path = "index.blkx"
[[allowlists]]
name = "allow"
path = "allow.txt"
[[lists]]
name = "block"
path = "block.txt"
category = "gambling"
[[lists]]
name = "exact"
path = "exact.txt"
category = "phishing"
match = "exact"
landing_ipv4 = "192.0.2.20"
"""
    )
    with open_source(config=str(config)) as source:
        sample = draw_sample(source, None, seed=5)
        landing = set(source.landing)
    assert landing == {"192.0.2.10", "192.0.2.20"}
    by_name = {d.name: d for d in sample.domains}
    assert "ok.example" not in by_name  # allowlisted: the index does not block it
    assert sample.strata[0].ineligible == 1
    assert {d.category for d in sample.domains} == {"gambling", "phishing"}
    # Exact-match entries do not cover www. or other names below: no subtree probes.
    assert all(len(by_name[n].probes) == 1 for n in names("exact", 10))
    assert all(len(by_name[n].probes) == 3 for n in names("block", 20))
    # Nothing compiled next to the config: a temporary index was used and removed.
    assert not (tmp_path / "index.blkx").exists()


def test_index_sources_checked_by_sha256(tmp_path: Path) -> None:
    first = load_config_specs(tmp_path)
    index = tmp_path / "index.blkx"
    write_index(compile_lists(first), index)
    # Change one list after the build and remove the other.
    write(tmp_path / "a.txt", [*names("a", 10), "new-since-build.example"])
    (tmp_path / "b.txt").unlink()
    with open_source(index=str(index)) as source:
        sample = draw_sample(source, None, seed=9)
    status = {s.list_name: s.status for s in sample.strata}
    assert status == {"a": "changed", "b": "missing"}
    text = "\n".join(sample.warnings)
    assert "'a'" in text and "changed since the index was built" in text
    assert "'b'" in text and "missing" in text
    drawn = {d.name for d in sample.domains}
    assert drawn == set(names("a", 10))  # the new name is not in the index: not sampled
    assert sample.strata[0].sha256 == file_sha256(tmp_path / "a.txt")


def test_index_unchanged_lists_have_no_warning(tmp_path: Path) -> None:
    specs = load_config_specs(tmp_path)
    index = tmp_path / "index.blkx"
    write_index(compile_lists(specs), index)
    with open_source(index=str(index)) as source:
        sample = draw_sample(source, 8, seed=1)
    assert sample.warnings == []
    assert {s.status for s in sample.strata} == {"ok"}
    assert len(sample.domains) == 8


def load_config_specs(tmp: Path) -> list[ListSpec]:
    write(tmp / "a.txt", names("a", 10))
    write(tmp / "b.txt", names("b", 5))
    config = tmp / "c.toml"
    config.write_text(
        '[[lists]]\nname = "a"\npath = "a.txt"\n[[lists]]\nname = "b"\npath = "b.txt"\n'
        'action = "nxdomain"\n'
    )
    return load_config(config).list_specs()


def test_spec_round_trip() -> None:
    spec = ListSpec(
        "l", "/x/l.txt", "cat", Action.NXDOMAIN, Ede.CENSORED, MatchMode.EXACT, "plain",
        ("192.0.2.1",), ("2001:db8::1",), 3,
    )  # fmt: skip
    assert spec_from_json(spec_json(spec), 0) == spec


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="exactly one"), open_source():
        pass
    with pytest.raises(SampleError, match="not found"), open_source(lists=[str(tmp_path / "no")]):
        pass
    empty = write(tmp_path / "empty.txt", ["# nothing"])
    with open_source(lists=[empty]) as source, pytest.raises(SampleError, match="no listed name"):
        draw_sample(source, 5, seed=1)
