"""Client groups see the entries that lost on precedence at the very same name (the index's
shadowed-entries table, resolver/index.py `_make_group_matcher`)."""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from resolver.cli import main
from resolver.compile import compile_lists, compile_temporary, current_index, write_index
from resolver.config import GroupConfig
from resolver.index import Index, IndexError_
from resolver.lists.model import ListSpec
from resolver.policy import Action, MatchMode

# (name, is allowlist, entries); allowlists first, as config order numbers them.
Lists = list[tuple[str, bool, list[str]]]


def _specs(tmp_path: Path, lists: Lists, exact: frozenset[str] = frozenset()) -> list[ListSpec]:
    specs = []
    for i, (name, allow, entries) in enumerate(lists):
        path = tmp_path / f"{name}.txt"
        path.write_text("".join(f"{entry}\n" for entry in entries))
        specs.append(
            ListSpec(
                name=name,
                path=str(path),
                action=Action.ALLOW if allow else Action.NXDOMAIN,
                match=MatchMode.EXACT if name in exact else MatchMode.SUBTREE,
                list_index=i,
                format="plain",
            )
        )
    return specs


def _allowed(index: Index, lists: set[str]) -> bytes:
    """A group's table, as resolver/groups.py builds it from `lists` and `allowlists`."""
    return bytes([0] + [p.list_name in lists for p in index.policies])


class Lookup:
    """The list a group's lookup picks for a name, through both the server's lookup and the
    tools' `Index.match` (what `blokir check --client` prints)."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def __call__(self, name: bytes, lists: set[str]) -> str | None:
        allowed = _allowed(self.index, lists)
        pid = self.index.match_policy_id_in(name, allowed)
        match = self.index.match(name, allowed)
        assert (match.policy_id if match else 0) == pid
        return self.index.policy(pid).list_name if pid else None


@pytest.fixture
def lookup_of(tmp_path: Path) -> Iterator[object]:
    opened: list[tuple[Index, Path]] = []

    def build(lists: Lists, exact: frozenset[str] = frozenset()) -> Lookup:
        index, file = compile_temporary(_specs(tmp_path, lists, exact))
        opened.append((index, file))
        return Lookup(index)

    yield build
    for index, file in opened:
        index.close()
        file.unlink()


def test_blocklist_entry_under_an_allowlist_entry_of_another_group(lookup_of) -> None:  # type: ignore[no-untyped-def]
    look = lookup_of([("school-sites", True, ["edu.example"]), ("family", False, ["edu.example"])])
    assert look(b"edu.example", {"family"}) == "family"  # unblocked before the side table
    assert look(b"www.edu.example", {"family"}) == "family"  # below, same name
    assert look(b"edu.example", {"family", "school-sites"}) == "school-sites"
    assert look(b"edu.example", {"school-sites"}) == "school-sites"
    assert look(b"edu.example", set()) is None
    assert look.index.policy(look.index.match_policy_id(b"edu.example")).list_name == (
        "school-sites"
    )


def test_two_blocklists_at_one_name_in_different_groups(lookup_of) -> None:  # type: ignore[no-untyped-def]
    look = lookup_of([("national", False, ["bet.example"]), ("family", False, ["bet.example"])])
    assert look(b"bet.example", {"national"}) == "national"
    assert look(b"bet.example", {"family"}) == "family"
    assert look(b"a.bet.example", {"family"}) == "family"
    assert look(b"bet.example", {"national", "family"}) == "national"


def test_three_lists_at_one_name_in_precedence_order(lookup_of) -> None:  # type: ignore[no-untyped-def]
    look = lookup_of(
        [("a", False, ["x.example"]), ("b", False, ["x.example"]), ("c", False, ["x.example"])]
    )
    assert look(b"x.example", {"c"}) == "c"
    assert look(b"x.example", {"b", "c"}) == "b"
    assert look(b"x.example", {"a", "c"}) == "a"
    assert look(b"y.x.example", {"c", "b"}) == "b"


def test_allowlist_shadowed_still_beats_the_groups_blocklist(lookup_of) -> None:  # type: ignore[no-untyped-def]
    """An allow entry only loses at its name to another allow entry (any allow beats any block):
    a group without the first allowlist still gets the second one's exception."""
    look = lookup_of(
        [
            ("allow-1", True, ["ok.bad.example"]),
            ("allow-2", True, ["ok.bad.example"]),
            ("block", False, ["bad.example", "ok.bad.example"]),
        ]
    )
    assert look(b"ok.bad.example", {"allow-2", "block"}) == "allow-2"
    assert look(b"ok.bad.example", {"block"}) == "block"
    assert look(b"ok.bad.example", {"allow-1", "block"}) == "allow-1"


def test_parent_names_still_apply_when_no_list_at_the_name_is_the_groups(lookup_of) -> None:  # type: ignore[no-untyped-def]
    look = lookup_of(
        [
            ("a", False, ["www.shop.example"]),
            ("b", False, ["www.shop.example"]),
            ("c", False, ["shop.example"]),
        ]
    )
    assert look(b"www.shop.example", {"c"}) == "c"
    assert look(b"www.shop.example", {"b", "c"}) == "b"
    assert look(b"www.shop.example", set()) is None


def test_exact_and_below_entries_are_kept_apart(lookup_of) -> None:  # type: ignore[no-untyped-def]
    """Shadowed entries keep their kind: an exact entry shadowed at a name does not cover the
    names below it, a `*.name` entry does not cover the name itself."""
    look = lookup_of(
        [
            ("a", False, ["x.example", "*.y.example"]),
            ("b", False, ["x.example", "y.example"]),
            ("c", False, ["*.x.example", "*.y.example"]),
        ],
        exact=frozenset({"a", "b", "c"}),
    )
    assert look(b"x.example", {"b"}) == "b"
    assert look(b"w.x.example", {"b"}) is None
    assert look(b"w.x.example", {"b", "c"}) == "c"
    assert look(b"y.example", {"c"}) is None
    assert look(b"w.y.example", {"c"}) == "c"
    assert look(b"y.example", {"a", "b"}) == "b"


def test_index_of_the_old_format_is_refused_and_recompiled(tmp_path: Path) -> None:
    specs = _specs(tmp_path, [("a", False, ["x.example"]), ("b", False, ["x.example"])])
    path = tmp_path / "index.blkx"
    write_index(compile_lists(specs), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 8, 1)  # the preamble's format version
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexError_, match=r"version 1.*recompile"):
        Index(path)
    assert current_index(path, specs) is None  # the caller compiles again


def test_check_client_shows_the_shadowed_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "school.txt").write_text("edu.example\n")
    (tmp_path / "family.txt").write_text("edu.example\n")
    config = tmp_path / "blokir.toml"
    config.write_text(
        '[blocking]\nindex_path = "index.blkx"\n'
        '[[allowlists]]\nname = "school-sites"\npath = "school.txt"\n'
        '[[lists]]\nname = "family"\npath = "family.txt"\n'
        '[[groups]]\nname = "family"\nclients = ["127.0.0.3/32"]\n'
        'lists = ["family"]\nallowlists = []\n'
    )
    c = str(config)
    assert main(["check", "-c", c, "--client", "127.0.0.3", "edu.example"]) == 0
    out = capsys.readouterr().out
    assert "group=family" in out and "list=family" in out
    assert main(["check", "-c", c, "--client", "192.0.2.1", "edu.example"]) == 1  # default


# -- against a reference built from the raw entries -------------------------------------------

_LABELS = ("a", "b", "c")


def _reference(lists: Lists, exact: frozenset[str], name: str, group: set[str]) -> str | None:
    """The group's list for `name` straight from the rules (docs/lists.md): the most specific
    name with an entry of a list in the group wins; at one name allow beats block, then the
    first list. Entries: `name` covers itself (and below, under subtree), `*.name` covers below
    (and itself, under subtree)."""
    labels = name.split(".")
    for depth in range(len(labels) - 1):
        candidate = ".".join(labels[depth:])
        best: tuple[int, int, str] | None = None
        for i, (list_name, allow, entries) in enumerate(lists):
            if list_name not in group:
                continue
            for entry in entries:
                wildcard = entry.startswith("*.")
                if entry.removeprefix("*.") != candidate:
                    continue
                covers_self = list_name not in exact or not wildcard
                covers_below = list_name not in exact or wildcard
                if covers_self if depth == 0 else covers_below:
                    rank = (0 if allow else 1, i, list_name)
                    best = rank if best is None or rank < best else best
        if best is not None:
            return best[2]
    return None


def _random_name(rng: random.Random, depth: int) -> str:
    return ".".join(rng.choice(_LABELS) for _ in range(depth)) + ".example"


@pytest.mark.parametrize("seed", range(30))
def test_group_lookup_matches_a_brute_force_reference(lookup_of, seed: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    lists: Lists = []
    for i in range(rng.randint(2, 5)):
        entries = [
            ("*." if rng.random() < 0.3 else "") + _random_name(rng, rng.randint(1, 3))
            for _ in range(rng.randint(1, 8))
        ]
        lists.append((f"l{i}", rng.random() < 0.3, entries))
    lists.sort(key=lambda item: not item[1])  # allowlists first, as in config order
    exact = frozenset(name for name, _, _ in lists if rng.random() < 0.4)
    look = lookup_of(lists, exact)
    names = [name for name, _, _ in lists]
    for _ in range(40):
        group = {name for name in names if rng.random() < 0.5}
        query = _random_name(rng, rng.randint(1, 4))
        expected = _reference(lists, exact, query, group)
        assert look(query.encode(), group) == expected, (lists, exact, query, group)
    for _ in range(10):  # the default group: every list, through match_policy_id
        query = _random_name(rng, rng.randint(1, 4))
        pid = look.index.match_policy_id(query.encode())
        got = look.index.policy(pid).list_name if pid else None
        assert got == _reference(lists, exact, query, set(names))


def test_groups_module_builds_the_same_tables(lookup_of) -> None:  # type: ignore[no-untyped-def]
    """The tests' `_allowed` agrees with resolver/groups.py for a group that names its lists."""
    from resolver.groups import GroupTable

    look = lookup_of([("allow", True, ["x.example"]), ("block", False, ["x.example"])])
    net = (ipaddress.ip_network("127.0.0.9/32"),)
    table = GroupTable([GroupConfig("g", net, ("block",), ())], look.index.policies)
    assert table.allowed[1] == _allowed(look.index, {"block"})
