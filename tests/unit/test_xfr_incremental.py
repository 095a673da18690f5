"""The incremental zone version (resolver/xfr/incremental.py) against the full one: for random
list changes, the records deleted and added from the changed lists only must equal the
difference of two full builds, precedence included; and a snapshot with that step applied must
equal the new full snapshot byte for byte."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from resolver.lists.model import ListSpec
from resolver.policy import Action, MatchMode
from resolver.xfr import incremental, snapshot

# A small name space with deep and shared parents, so that changes meet precedence often.
LABELS = ["a", "b", "c", "www", "ads"]
BASES = ["example.com", "example.net", "shop.example.com", "org"]


def names(rng: random.Random, count: int) -> list[str]:
    found = []
    for _ in range(count):
        base = rng.choice(BASES)
        depth = rng.choice([0, 0, 1, 1, 2])
        found.append(".".join([*(rng.choice(LABELS) for _ in range(depth)), base]))
    return found


def rpz_lines(rng: random.Random, listed: list[str]) -> list[str]:
    """An RPZ-format list: several policies in one list (one per action used)."""
    actions = ["CNAME .", "CNAME *.", "CNAME rpz-passthru.", "A 192.0.2.7"]
    lines = ["$ORIGIN feed.example.", "@ SOA ns. h. 1 3600 600 86400 60", "@ NS ns."]
    for name in listed:
        owner = rng.choice([name, f"*.{name}"])
        lines.append(f"{owner} {rng.choice(actions)}")
    return lines


class Lists:
    """Four lists in config order: an allowlist, a subtree block list, an exact NODATA list
    and an RPZ feed; `mutate` changes some of them at random."""

    def __init__(self, directory: Path, rng: random.Random) -> None:
        self.directory = directory
        self.rng = rng
        self.content = {
            "allow": names(rng, 4),
            "block": names(rng, 25),
            "exact": names(rng, 10),
            "feed": rpz_lines(rng, names(rng, 12)),
        }
        self.specs = [
            ListSpec("allow", str(directory / "allow.txt"), action=Action.ALLOW, list_index=0),
            ListSpec("block", str(directory / "block.txt"), action=Action.NXDOMAIN, list_index=1),
            ListSpec(
                "exact",
                str(directory / "exact.txt"),
                action=Action.NODATA,
                match=MatchMode.EXACT,
                list_index=2,
            ),
            ListSpec("feed", str(directory / "feed.rpz"), format="rpz", list_index=3),
        ]
        self.write()

    def write(self) -> None:
        for spec in self.specs:
            path = Path(spec.path)
            path.write_text("\n".join(self.content[spec.name]) + "\n")
            stat = path.stat()  # a new mtime even within the clock's resolution
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    def mutate(self) -> None:
        rng = self.rng
        for name in rng.sample(sorted(self.content), rng.randint(1, 2)):
            lines = self.content[name]
            if name == "feed":
                head, body = lines[:3], lines[3:]
                body = [line for line in body if rng.random() > 0.3]
                body += rpz_lines(rng, names(rng, rng.randint(0, 4)))[3:]
                self.content[name] = head + body
            else:
                kept = [line for line in lines if rng.random() > 0.25]
                moved = rng.sample(self.content["block"], min(2, len(self.content["block"])))
                self.content[name] = kept + names(rng, rng.randint(0, 4)) + moved
        self.write()


def zone_request(lists: Lists, **fields: object) -> snapshot.Request:
    """The settings every build here shares (the landing address makes A records too)."""
    settings: dict[str, object] = {
        "landing_ipv4": "192.0.2.1",
        "landing_ipv6": None,
        "ttl": 60,
        "zone": "rpz.test.",
    }
    return snapshot.Request(specs=lists.specs, **{**settings, **fields})  # type: ignore[arg-type]


def full(
    lists: Lists, work: Path, tag: str, previous: Path | None
) -> tuple[Path, list[str], list[str]]:
    """A full build into work/zone-<tag>.txt, with its difference from `previous`."""
    request = zone_request(
        lists,
        output=work / f"zone-{tag}.txt",
        previous=previous,
        deleted=work / f"full-del-{tag}.txt" if previous else None,
        added=work / f"full-add-{tag}.txt" if previous else None,
        store_out=work / f"store-{tag}",
    )
    snapshot.build(request)
    if previous is None:
        return request.output, [], []
    assert request.deleted and request.added
    return request.output, lines(request.deleted), lines(request.added)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def check_step(lists: Lists, work: Path, tag: str, zone: Path, store: Path) -> snapshot.Request:
    """Build the step from `zone` (whose lists are in `store`) incrementally and in full, and
    check both give the same records deleted and added; returns the incremental request."""
    request = zone_request(
        lists,
        output=work / "unused.txt",
        previous=zone,
        deleted=work / f"del-{tag}.txt",
        added=work / f"add-{tag}.txt",
        mode="step",
        store=store,
        store_out=work / f"step-store-{tag}",
    )
    assert snapshot.build(request).incremental
    assert not request.output.exists()  # the full snapshot is left for later
    _, deleted, added = full(lists, work, tag, zone)
    assert request.deleted and request.added
    assert sorted(lines(request.deleted)) == sorted(deleted)
    assert sorted(lines(request.added)) == sorted(added)
    return request


@pytest.mark.parametrize("seed", range(40))
def test_incremental_step_equals_full_difference(tmp_path: Path, seed: int) -> None:
    lists = Lists(tmp_path, random.Random(seed))
    work = tmp_path / "work"
    work.mkdir()
    zone, _, _ = full(lists, work, "0", None)
    store = work / "store-0"
    for round_ in range(1, 4):
        lists.mutate()
        step = check_step(lists, work, str(round_), zone, store)
        new_zone = work / f"zone-{round_}.txt"
        # The snapshot rebuilt from the old one and the step is the full build's, exactly.
        merged = work / f"merged-{round_}.txt"
        snapshot.build(
            snapshot.Request(
                specs=[],
                landing_ipv4=None,
                landing_ipv6=None,
                ttl=60,
                zone="rpz.test.",
                output=merged,
                previous=zone,
                deleted=step.deleted,
                added=step.added,
                mode="merge",
            )
        )
        assert merged.read_bytes() == new_zone.read_bytes()
        assert step.store_out is not None
        zone, store = new_zone, step.store_out


def write(path: Path, *entries: str) -> None:
    path.write_text("".join(f"{e}\n" for e in entries))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


CASES = [
    # (allowlist before, block before, exact before, allowlist after, block after, exact after)
    pytest.param([], ["a.example.com"], [], [], [], ["a.example.com"], id="moved-between-lists"),
    pytest.param([], ["example.com"], [], ["www.example.com"], ["example.com"], [], id="allow-add"),
    pytest.param(["www.example.com"], ["example.com"], [], [], ["example.com"], [], id="allow-rm"),
    pytest.param(
        [], ["x.y.example.com"], [], [], ["x.y.example.com", "example.com"], [], id="parent-block"
    ),
    pytest.param(
        [], ["example.com", "x.y.example.com"], [], [], ["x.y.example.com"], [], id="parent-gone"
    ),
    pytest.param(
        [], ["example.com"], ["example.com"], [], [], ["example.com"], id="subtree-to-exact"
    ),
    pytest.param(
        [], ["example.com"], ["a.b.example.com"], [], ["example.com"], [], id="ent-below-gone"
    ),
]


@pytest.mark.parametrize(("allow0", "block0", "exact0", "allow1", "block1", "exact1"), CASES)
def test_precedence_cases(
    tmp_path: Path,
    allow0: list[str],
    block0: list[str],
    exact0: list[str],
    allow1: list[str],
    block1: list[str],
    exact1: list[str],
) -> None:
    rng = random.Random(0)
    lists = Lists(tmp_path, rng)
    lists.specs = lists.specs[:3]
    work = tmp_path / "work"
    work.mkdir()
    for name, entries in zip(("allow", "block", "exact"), (allow0, block0, exact0), strict=True):
        write(tmp_path / f"{name}.txt", "keep.example.org", *entries)
    zone, _, _ = full(lists, work, "0", None)
    for name, entries in zip(("allow", "block", "exact"), (allow1, block1, exact1), strict=True):
        write(tmp_path / f"{name}.txt", "keep.example.org", *entries)
    step = check_step(lists, work, "1", zone, work / "store-0")
    assert step.deleted and step.added
    assert lines(step.deleted) or lines(step.added)  # every case changes the zone


def test_other_settings_build_in_full(tmp_path: Path) -> None:
    lists = Lists(tmp_path, random.Random(1))
    work = tmp_path / "work"
    work.mkdir()
    full(lists, work, "0", None)
    settings = incremental.settings_of(30, "192.0.2.1", None, "rpz.test.")  # another TTL
    assert incremental.build_step(lists.specs, settings, work / "store-0", work / "s") is None


def test_entry_file_lookups(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    incremental.write_entries(
        [(b"example.com", 3, 0), (b"a.example.com", 1, 1), (b"example-x.com", 1, 0)], path
    )
    entries = incremental.EntryFile(path)
    try:
        assert entries.rows(b"example.com") == [(3, 0)]
        assert entries.rows(b"b.example.com") == []
        assert list(entries.below(b"example.com")) == [b"a.example.com"]
        assert list(entries.below(b"com")) == [b"example.com", b"example-x.com", b"a.example.com"]
    finally:
        entries.close()


def test_ip_triggers_are_in_a_full_build_and_their_change_builds_in_full(tmp_path: Path) -> None:
    """A list of addresses (`kind = "ip"`) is served as `rpz-ip` records; a step covers names
    and their subtrees only, so a change to a list holding triggers is built in full, and the
    full build carries the new triggers."""
    lists = Lists(tmp_path, random.Random(2))
    ips = ListSpec("ips", str(tmp_path / "ips.txt"), kind="ip", list_index=4)
    lists.specs = [*lists.specs, ips]
    write(tmp_path / "ips.txt", "192.0.2.0/24")
    work = tmp_path / "work"
    work.mkdir()
    zone, _, _ = full(lists, work, "0", None)
    assert any(line.startswith("24.0.2.0.192.rpz-ip ") for line in lines(zone))
    write(tmp_path / "ips.txt", "192.0.2.0/24", "198.51.100.7")
    settings = incremental.settings_of(60, "192.0.2.1", None, "rpz.test.")
    assert incremental.build_step(lists.specs, settings, work / "store-0", work / "s") is None
    _, _, added = full(lists, work, "1", zone)
    assert any(line.startswith("32.7.100.51.198.rpz-ip ") for line in added)
