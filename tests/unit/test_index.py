"""The compiled index: round trip, precedence, integrity checks."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from resolver.compile import collect_names, compile_lists, write_index
from resolver.index import IndexData, IndexError_, open_index, policy_ids_within, save_index
from resolver.lists.model import ListSpec
from resolver.policy import Action, MatchMode, Policy


def _list(tmp_path: Path, name: str, lines: list[str], **kw: object) -> ListSpec:
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return ListSpec(name=name, path=str(path), format="plain", **kw)  # type: ignore[arg-type]


def _specs(*specs: ListSpec) -> list[ListSpec]:
    """Config order: allowlists first, then block lists, each with its position."""
    ordered = [s for s in specs if s.action is Action.ALLOW] + [
        s for s in specs if s.action is not Action.ALLOW
    ]
    from dataclasses import replace

    return [replace(s, list_index=i) for i, s in enumerate(ordered)]


def _build(tmp_path: Path, specs: list[ListSpec]):  # type: ignore[no-untyped-def]
    result = compile_lists(specs)
    path = tmp_path / "test.blkx"
    write_index(result, path)
    return open_index(path)


def _verdict(index, name: str) -> str:  # type: ignore[no-untyped-def]
    found = index.match(name.encode())
    pid = index.match_policy_id(name.encode())
    assert (found.policy_id if found else 0) == pid, "match and match_policy_id disagree"
    if found is None:
        return "none"
    policy = index.policy(found.policy_id)
    return f"{policy.action.value}:{policy.list_name}"


def test_round_trip_every_entry_found_and_random_names_not(tmp_path: Path) -> None:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

    def label() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))

    # Letters-only TLDs: an all-digit last label is rejected as an IP fragment.
    names = {
        ".".join([label() for _ in range(rng.randint(1, 3))] + [rng.choice(["com", "id", "xyz"])])
        for _ in range(20_000)
    }
    spec = _list(tmp_path, "big", sorted(names), match=MatchMode.EXACT)
    index = _build(tmp_path, [spec])
    try:
        assert index.count == len(names)
        assert all(index.match_policy_id(n.encode()) for n in names)
        misses = [f"zz{i}.nothere-{i}.invalid" for i in range(20_000)]
        assert not any(index.match_policy_id(n.encode()) for n in misses)
        keys, _, below_pid = index.arrays()
        assert np.all(keys[1:] > keys[:-1])
        assert not below_pid.any()  # exact list: nothing covers names below
    finally:
        index.close()


# (query, expected verdict) for one set of lists: the README's matching table.
PRECEDENCE = [
    ("example.com", "landing:block"),
    ("a.b.example.com", "landing:block"),
    ("notexample.com", "none"),
    ("good.example.com", "allow:allow"),
    ("x.good.example.com", "allow:allow"),  # most specific match wins
    ("bad.good.example.com", "nxdomain:second"),  # a block below an allow is more specific
    ("both.example.org", "allow:allow"),  # allow beats block at the same name
    ("first.example.net", "landing:block"),  # first block list in config order wins
    ("exact.example.io", "refused:exact"),
    ("sub.exact.example.io", "none"),  # exact lists do not cover names below
    ("wild.example.io", "none"),  # *.name under exact: names below only
    ("a.wild.example.io", "refused:exact"),
    ("only.example.com", "allow:allow-exact"),  # exact allow at the name
    ("x.only.example.com", "landing:block"),  # ...does not shield names below it
    ("com", "none"),  # a bare TLD is never an entry
]


def test_precedence_table(tmp_path: Path) -> None:
    specs = _specs(
        _list(tmp_path, "allow", ["good.example.com", "both.example.org"], action=Action.ALLOW),
        _list(
            tmp_path,
            "allow-exact",
            ["only.example.com"],
            action=Action.ALLOW,
            match=MatchMode.EXACT,
        ),
        _list(tmp_path, "block", ["example.com", "both.example.org", "first.example.net"]),
        _list(
            tmp_path,
            "second",
            ["first.example.net", "bad.good.example.com"],
            action=Action.NXDOMAIN,
        ),
        _list(
            tmp_path,
            "exact",
            ["exact.example.io", "*.wild.example.io"],
            action=Action.REFUSED,
            match=MatchMode.EXACT,
        ),
    )
    index = _build(tmp_path, specs)
    try:
        observed = [(q, _verdict(index, q)) for q in (q for q, _ in PRECEDENCE)]
        assert observed == PRECEDENCE
    finally:
        index.close()
    # The name-keeping merge used by exports resolves the same way.
    named = collect_names(specs)
    policy = named.policies.get
    assert policy(named.entries[b"both.example.org"][0]).list_name == "allow"
    assert policy(named.entries[b"first.example.net"][0]).list_name == "block"
    assert named.entries[b"exact.example.io"][1] == 0
    assert named.entries[b"wild.example.io"][0] == 0


def test_duplicates_counted_per_list(tmp_path: Path) -> None:
    spec = _list(tmp_path, "dups", ["a.example", "A.EXAMPLE", "a.example.", "b.example", "bad..x"])
    result = compile_lists([spec])
    (listed,) = result.lists
    assert listed.report.entries == 4
    assert listed.unique == 2
    assert listed.duplicates == 2
    assert listed.report.rejected == {"empty_label": 1}
    assert listed.sha256 and listed.size > 0


def test_empty_list_makes_a_valid_empty_index(tmp_path: Path) -> None:
    index = _build(tmp_path, [_list(tmp_path, "empty", ["# nothing here"])])
    try:
        assert index.count == 0
        assert index.match_policy_id(b"anything.example") == 0
    finally:
        index.close()


def test_ip_entries_kept_apart(tmp_path: Path) -> None:
    index = _build(tmp_path, [_list(tmp_path, "ips", ["1.2.3.4", "*.200.10.104.174", "a.example"])])
    try:
        assert index.count == 1
        assert index.ip_entries() == ["1.2.3.4", "200.10.104.174"]
    finally:
        index.close()


@pytest.fixture
def index_file(tmp_path: Path) -> Path:
    result = compile_lists([_list(tmp_path, "l", [f"n{i}.example" for i in range(1000)])])
    path = tmp_path / "ok.blkx"
    write_index(result, path)
    return path


def test_truncated_index_refused(index_file: Path) -> None:
    data = index_file.read_bytes()
    index_file.write_bytes(data[: len(data) - 100])
    with pytest.raises(IndexError_, match="truncated or corrupt"):
        open_index(index_file)
    index_file.write_bytes(data[:10])
    with pytest.raises(IndexError_, match=r"too short|truncated"):
        open_index(index_file)


def test_corrupt_data_refused(index_file: Path) -> None:
    data = bytearray(index_file.read_bytes())
    data[-70] ^= 0xFF  # inside the sections, past the header
    index_file.write_bytes(bytes(data))
    with pytest.raises(IndexError_, match="checksum"):
        open_index(index_file)


def test_corrupt_header_refused(index_file: Path) -> None:
    data = bytearray(index_file.read_bytes())
    data[40] ^= 0x01
    index_file.write_bytes(bytes(data))
    with pytest.raises(IndexError_, match="header"):
        open_index(index_file)


def test_not_an_index_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.blkx"
    path.write_bytes(b"hello world, definitely not an index file")
    with pytest.raises(IndexError_, match="not a blokir index"):
        open_index(path)
    with pytest.raises(IndexError_, match="cannot open"):
        open_index(tmp_path / "missing.blkx")


def test_save_is_atomic_replace(index_file: Path, tmp_path: Path) -> None:
    """A reader holding the old mapping keeps working while a new index replaces the file."""
    old = open_index(index_file)
    try:
        result = compile_lists([_list(tmp_path, "new", ["fresh.example"])])
        write_index(result, index_file)
        assert old.match_policy_id(b"n5.example")
        new = open_index(index_file)
        assert new.match_policy_id(b"fresh.example") and not new.match_policy_id(b"n5.example")
        new.close()
    finally:
        old.close()
    assert not [p for p in index_file.parent.iterdir() if p.name.startswith(".ok.blkx")]


def _index_with_pids(
    path: Path, self_pids: list[int], below_pids: list[int], n_policies: int
) -> Path:
    """An index whose policy-id columns are written as given (save_index does not check them),
    with `n_policies` policies: the shape of a corrupt or hand-made file."""
    keys = np.arange(1, len(self_pids) + 1, dtype=np.uint64) << np.uint64(40)
    policies = [Policy(f"l{i}", "ads", Action.NXDOMAIN, list_index=i) for i in range(n_policies)]
    data = IndexData(
        keys,
        np.array(self_pids, dtype=np.uint16),
        np.array(below_pids, dtype=np.uint16),
        policies,
    )
    save_index(data, path)
    return path


@pytest.mark.parametrize("n_policies", [0, 1, 3, 255, 256, 300])
def test_policy_id_out_of_range_refused(tmp_path: Path, n_policies: int) -> None:
    """Every id must name a policy (1..n): checked one way below 256 policies, another from 256
    on; a bad id in either column, anywhere (also past the first 64Ki ids), refuses the file."""
    size = 70_000
    good = [(i % (n_policies + 1)) for i in range(size)]
    with open_index(_index_with_pids(tmp_path / "ok.blkx", good, good, n_policies)) as index:
        assert index.count == size
    # one past the last, a high byte set with a valid low byte, a lone surrogate, the maximum
    for bad in (n_policies + 1, 0x100 * (n_policies // 0x100 + 1) + 1, 0xD800, 0xFFFF):
        for position in (0, size - 1, 65_537):
            pids = list(good)
            pids[position] = bad
            for self_pids, below_pids in ((pids, good), (good, pids)):
                path = _index_with_pids(tmp_path / "bad.blkx", self_pids, below_pids, n_policies)
                with pytest.raises(IndexError_, match="policy id out of range"):
                    open_index(path)


def test_policy_ids_within_matches_a_plain_max() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        size = int(rng.choice([1, 2, 5, 70_000]))
        limit = int(rng.choice([0, 1, 7, 254, 255, 256, 1000, 0xD7FF, 0xD800, 0xFFFE, 0xFFFF]))
        ids = rng.integers(0, limit + 1, size, dtype=np.uint16)
        if rng.random() < 0.6:
            # surrogates: lone, or a high one followed by a low one (a valid UTF-16 pair)
            at = int(rng.integers(size))
            ids[at] = rng.choice(
                [min(limit + 1, 0xFFFF), 255, 256, 0xD800, 0xDBFF, 0xDC00, 0xFEFF, 0xFFFF]
            )
            if at + 1 < size and rng.random() < 0.3:
                ids[at : at + 2] = (0xD800, 0xDC00)
        view = memoryview(ids.astype("<u2").tobytes()).cast("H")
        assert policy_ids_within(view, limit) == (int(ids.max()) <= limit), (limit, int(ids.max()))
