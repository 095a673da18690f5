"""The next zone version from the changed lists only: a cost that follows the change, not the
policy.

Per list, the child keeps the list's last version on disk as sorted entry lines
`KEY<TAB>MATCH<TAB>POLICY` (`ListStore`), KEY being the name with its labels reversed
(`com.example.www`): every subtree is then one contiguous range, found by binary search in the
memory-mapped file. A reload re-reads only the lists whose files changed (size, mtime, then the
sha256 of their bytes), and a sorted merge of a changed list's old and new entries gives the
names whose entries changed.

The records of one owner depend on a small neighbourhood of the merged policy
(resolver/export.py `_RpzWriter.groups`): the name's own (self, below) rules, and its inherited
`*.name` wildcard, which repeats the nearest parent's below rule and exists when the name is
listed, or is a parent of a listed name (an empty non-terminal), and has no below rule of its
own. So a changed name N can change the records of N, of N's parents (whether they are such a
parent), and, when N's below rule changed, of the listed names in N's subtree and the parents
between them and N. Those owners are recomputed from the old and the new lists (`View`) with the
same rule the export uses (the export's own writer makes their record lines), and their
difference is the IXFR step (RFC 1995). `tests/unit/test_xfr_incremental.py` checks it against a
full rebuild and diff.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import mmap
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resolver.export import rpz_writer
from resolver.lists.files import ListFileError, resolve_parts
from resolver.lists.model import ListSpec
from resolver.policy import MATCH_BELOW, MATCH_IP, MATCH_SELF, Policy, PolicyTable
from resolver.provenance import spec_json

_BUFFER = 1 << 20
STORE_FORMAT = 1


def key(name: bytes) -> bytes:
    """The name with its labels reversed: a subtree sorts as one range after its top name."""
    return b".".join(reversed(name.split(b".")))


unkey = key  # reversing twice gives the name back


def _parents(name: bytes) -> Iterator[bytes]:
    while (dot := name.find(b".")) >= 0:
        name = name[dot + 1 :]
        yield name


# -- one list's entries on disk -------------------------------------------------------------------


class EntryFile:
    """A sorted entry file, memory-mapped: exact and subtree look-ups by binary search."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        size = os.fstat(self._handle.fileno()).st_size
        self._map: mmap.mmap | bytes = (
            mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        )
        self._size = size

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._handle.close()

    def _line_at(self, offset: int) -> tuple[int, bytes]:
        """The start and text of the line holding `offset`."""
        start = self._map.rfind(b"\n", 0, offset) + 1
        end = self._map.find(b"\n", offset)
        return start, self._map[start : end if end >= 0 else self._size]

    def _lower_bound(self, prefix: bytes) -> int:
        """Offset of the first line >= prefix (bytes order)."""
        lo, hi = 0, self._size  # invariant: lines starting before lo are < prefix
        while lo < hi:
            mid = (lo + hi) // 2
            start, line = self._line_at(mid)
            if line < prefix:
                lo = start + len(line) + 1
            else:
                hi = start
        return lo

    def scan(self, prefix: bytes) -> Iterator[bytes]:
        """Lines starting with `prefix`, in order."""
        offset = self._lower_bound(prefix)
        while offset < self._size:
            end = self._map.find(b"\n", offset)
            end = self._size if end < 0 else end
            line = self._map[offset:end]
            if not line.startswith(prefix):
                return
            yield line
            offset = end + 1

    def rows(self, name: bytes) -> list[tuple[int, int]]:
        """(match, local policy) of every entry of `name` in this list."""
        found = []
        for line in self.scan(key(name) + b"\t"):
            _, match, policy = line.split(b"\t")
            found.append((int(match), int(policy)))
        return found

    def below(self, name: bytes) -> Iterator[bytes]:
        """The names listed strictly below `name`, in key order (parents first)."""
        for line in self.scan(key(name) + b"."):
            yield unkey(line.split(b"\t", 1)[0])


def write_entries(rows: Iterable[tuple[bytes, int, int]], path: Path) -> None:
    """(name, match, local policy) rows, sorted by key and de-duplicated, into `path`."""
    lines = sorted({b"%s\t%d\t%d\n" % (key(n), m, p) for n, m, p in rows})
    with open(path, "wb", buffering=_BUFFER) as out:
        out.writelines(lines)


def changed_names(old: Path, new: Path) -> set[bytes]:
    """Names with an entry in one file and not the same entry in the other (sorted merge)."""
    names: set[bytes] = set()
    with open(old, "rb", buffering=_BUFFER) as a, open(new, "rb", buffering=_BUFFER) as b:
        x, y = a.readline(), b.readline()
        while x or y:
            if x == y:
                x, y = a.readline(), b.readline()
            elif y == b"" or (x and x < y):
                names.add(unkey(x.split(b"\t", 1)[0]))
                x = a.readline()
            else:
                names.add(unkey(y.split(b"\t", 1)[0]))
                y = b.readline()
    return names


# -- the lists of one zone version ----------------------------------------------------------------


@dataclass(slots=True)
class StoredList:
    spec: dict[str, Any]
    file: str
    sha256: str
    size: int
    mtime: float
    policies: list[dict[str, object]]


@dataclass(slots=True)
class Store:
    """`<dir>/lists.json` and one entry file per list: the lists a zone version was built from.
    `settings` are what besides the lists shapes the records (TTL, landing, zone)."""

    directory: Path
    settings: dict[str, Any]
    lists: list[StoredList] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> Store | None:
        try:
            data = json.loads((directory / "lists.json").read_text())
            if data.get("format") != STORE_FORMAT:
                return None
            lists = [StoredList(**item) for item in data["lists"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all((directory / s.file).is_file() for s in lists):
            return None
        return cls(directory, dict(data["settings"]), lists)

    def save(self) -> None:
        data = {
            "format": STORE_FORMAT,
            "settings": self.settings,
            "lists": [
                {
                    "spec": s.spec,
                    "file": s.file,
                    "sha256": s.sha256,
                    "size": s.size,
                    "mtime": s.mtime,
                    "policies": s.policies,
                }
                for s in self.lists
            ],
        }
        (self.directory / "lists.json").write_text(json.dumps(data))


def settings_of(
    ttl: int, landing_ipv4: str | None, landing_ipv6: str | None, zone: str
) -> dict[str, Any]:
    return {"ttl": ttl, "landing_ipv4": landing_ipv4, "landing_ipv6": landing_ipv6, "zone": zone}


class View:
    """The merged policy of one Store, by name, read from its entry files on demand."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.policies = PolicyTable()
        self.files: list[EntryFile] = []
        self._pids: list[list[int]] = []  # per list: local policy -> global id
        for stored in store.lists:
            self._pids.append([self.policies.intern(Policy.from_json(p)) for p in stored.policies])
            self.files.append(EntryFile(store.directory / stored.file))
        # Lowest (precedence, id) wins at one name, as resolver/compile.py ranks them.
        self._rank = {
            pid: (*self.policies.get(pid).precedence(), pid)
            for pid in range(1, len(self.policies) + 1)
        }
        self._cache: dict[bytes, tuple[int, int] | None] = {}

    def close(self) -> None:
        for entry_file in self.files:
            entry_file.close()

    def entry(self, name: bytes) -> tuple[int, int] | None:
        """(self policy, below policy) at `name`, 0 for none; None when it is not listed."""
        if name in self._cache:
            return self._cache[name]
        best = [0, 0]
        listed = False
        for local, entry_file in zip(self._pids, self.files, strict=True):
            for match, policy in entry_file.rows(name):
                listed = True
                pid = local[policy]
                for slot, flag in ((0, MATCH_SELF), (1, MATCH_BELOW)):
                    if match & flag and (
                        not best[slot] or self._rank[pid] < self._rank[best[slot]]
                    ):
                        best[slot] = pid
        found = (best[0], best[1]) if listed else None
        self._cache[name] = found
        return found

    def below(self, name: bytes) -> Iterator[bytes]:
        """The names listed strictly below `name` in any list, in key order (with repeats)."""
        return heapq.merge(*(f.below(name) for f in self.files), key=key)


class Owners:
    """The record lines of single owners, by the export's rules (resolver/export.py)."""

    def __init__(self, view: View, settings: dict[str, Any]) -> None:
        from resolver.compile import NamedEntries  # numpy: only in the build child

        self.view = view
        self.writer = rpz_writer(
            NamedEntries(view.policies, {}, []),
            landing_ipv4=settings["landing_ipv4"],
            landing_ipv6=settings["landing_ipv6"],
            ttl=int(settings["ttl"]),
            zone=str(settings["zone"]),
        )

    def valid_below(self, name: bytes) -> int:
        """The below rule the export writes at `name` (0 when none or not expressible)."""
        pids = self.view.entry(name)
        if pids is None or not pids[1] or self.writer.name_problem(name) is not None:
            return 0
        return int(pids[1]) if self.writer.rdata(pids[1]) else 0

    def inherited(self, name: bytes) -> int:
        """The below rule `*.name` repeats: the nearest parent's, when `name` has none of its own
        and is listed or is a parent of a listed name (`_RpzWriter.inherited`)."""
        if self.writer.unsafe(name) or self.valid_below(name):
            return 0
        listed = self.view.entry(name) is not None
        if not listed and not any(not self.writer.unsafe(n) for n in self.view.below(name)):
            return 0
        for parent in _parents(name):
            pid = self.valid_below(parent)
            if pid:
                return pid
        return 0

    def lines(self, name: bytes) -> list[str]:
        """What `rpz_records` yields for `name` (the comment of inherited records dropped)."""
        pids = self.view.entry(name)
        text = name.decode("ascii", "backslashreplace")
        lines: list[str] = []
        if pids is not None and self.writer.name_problem(name) is None:
            records, _ = self.writer.template(pids)
            lines = [prefix + text + rest for prefix, rest in records]
        pid = self.inherited(name)
        if pid:
            lines.extend(f"*.{text} {r}" for r in self.writer.rdata(pid))
        return lines


def affected(changed: set[bytes], old: Owners, new: Owners) -> set[bytes]:
    """Every owner whose records may differ between `old` and `new`, given the names whose
    entries changed: the names, their parents, and under a changed below rule their subtree's
    listed names and the parents between those and the name."""
    owners: set[bytes] = set()
    for name in changed:
        owners.add(name)
        owners.update(_parents(name))
        if old.valid_below(name) == new.valid_below(name):
            continue
        for view in (old.view, new.view):
            for below in view.below(name):
                owners.add(below)
                for parent in _parents(below):
                    if parent == name or parent in owners:
                        break
                    owners.add(parent)
    return owners


def _owner_name(record: str) -> str:
    owner = record[: record.index(" ")]
    return owner[2:] if owner.startswith("*.") else owner


def difference(changed: set[bytes], old: Owners, new: Owners) -> tuple[list[str], list[str]]:
    """The records deleted and added (each in the snapshot's name order)."""
    deleted: list[str] = []
    added: list[str] = []
    for name in sorted(affected(changed, old, new)):
        before, after = old.lines(name), new.lines(name)
        if before != after:
            kept = set(after)
            deleted.extend(r for r in before if r not in kept)
            kept = set(before)
            added.extend(r for r in after if r not in kept)
    return deleted, added


# -- applying a difference to a snapshot ----------------------------------------------------------


def merged(snapshot: Iterable[str], deleted: Iterable[str], added: Iterable[str]) -> Iterator[str]:
    """The records of `snapshot` with one step applied, in the order a full build writes them:
    names in order, a name's own records before its `*.name` ones. One streaming pass; memory
    holds the step only."""
    gone = set(deleted)
    new: dict[str, list[str]] = {}
    for record in added:
        new.setdefault(_owner_name(record), []).append(record)
    pending = sorted(new)
    position = 0
    for name, records in itertools.groupby(snapshot, key=_owner_name):
        while position < len(pending) and pending[position] < name:
            yield from _ordered(new[pending[position]])
            position += 1
        kept = [r for r in records if r not in gone]
        if position < len(pending) and pending[position] == name:
            kept += new[name]
            position += 1
        yield from _ordered(kept)
    for name in pending[position:]:
        yield from _ordered(new[name])


def _ordered(records: list[str]) -> list[str]:
    return sorted(records, key=lambda r: r.startswith("*."))  # stable: rdata order kept


# -- building --------------------------------------------------------------------------------------


def _rows(spec: ListSpec, policies: PolicyTable) -> tuple[Any, list[tuple[bytes, int, int]]]:
    """Parse one list: its ListResult (size, mtime, sha256) and (name, match, policy id) rows."""
    from resolver.compile import open_list  # numpy: only in the build child

    result, batches = open_list(spec, policies)
    rows = [(n, b.match, b.pid) for b in batches if b.names for n in b.names]
    return result, rows


def _store_list(
    spec: ListSpec,
    result: Any,
    rows: list[tuple[bytes, int, int]],
    policies: PolicyTable,
    path: Path,
) -> StoredList:
    """Write a list's entry file; its policies are kept in id order (ties between rules of one
    list go to the lower id, as in resolver/compile.py), numbered from 0 in the file."""
    pids = sorted({pid for _, _, pid in rows})
    local = {pid: i for i, pid in enumerate(pids)}
    write_entries(((n, m, local[p]) for n, m, p in rows), path)
    return StoredList(
        spec_json(spec),
        path.name,
        result.sha256,
        result.size,
        result.mtime,
        [policies.get(p).to_json() for p in pids],
    )


def build_full(specs: list[ListSpec], settings: dict[str, Any], out: Path) -> Any:
    """Parse every list, write the Store into `out`, and return the merged policy by name
    (`resolver.compile.NamedEntries`, as `collect_names` makes it)."""
    from resolver.compile import NamedEntries

    out.mkdir(parents=True, exist_ok=True)
    policies = PolicyTable()
    store = Store(out, settings)
    results = []
    entries: dict[bytes, tuple[int, int]] = {}
    ip: dict[bytes, int] = {}
    ranks: dict[int, tuple[int, int, int]] = {}
    for number, spec in enumerate(specs):
        result, rows = _rows(spec, policies)
        store.lists.append(_store_list(spec, result, rows, policies, out / f"list-{number}.txt"))
        results.append(result)
        for pid in range(len(ranks) + 1, len(policies) + 1):
            ranks[pid] = (*policies.get(pid).precedence(), pid)  # lowest wins, as in compile.py
        for name, match, pid in rows:
            if match & MATCH_IP:  # a response-IP trigger: `rpz-ip` records, by prefix
                held = ip.get(name)
                if held is None or ranks[pid] < ranks[held]:
                    ip[name] = pid
                continue
            own, below = entries.get(name, (0, 0))
            if match & MATCH_SELF and (not own or ranks[pid] < ranks[own]):
                own = pid
            if match & MATCH_BELOW and (not below or ranks[pid] < ranks[below]):
                below = pid
            entries[name] = (own, below)
    store.save()
    return NamedEntries(policies, entries, results, ip)


@dataclass(slots=True)
class Step:
    deleted: list[str]
    added: list[str]
    reparsed: list[str]  # the lists read again


def build_step(
    specs: list[ListSpec], settings: dict[str, Any], previous: Path, out: Path
) -> Step | None:
    """The difference from the Store in `previous` to the lists now, writing the new Store into
    `out`; None when it cannot be made that way (no Store, or other list settings, TTL, landing
    or zone: then every record may change and the caller builds in full)."""
    old = Store.load(previous)
    if old is None or old.settings != settings:
        return None
    if [s.spec for s in old.lists] != [spec_json(s) for s in specs]:
        return None
    out.mkdir(parents=True, exist_ok=True)
    new = Store(out, settings)
    changed: set[bytes] = set()
    reparsed = []
    for spec, stored in zip(specs, old.lists, strict=True):
        target = out / stored.file
        if list_state(spec) == (stored.size, stored.mtime):
            os.link(previous / stored.file, target)
            new.lists.append(stored)
            continue
        reparsed.append(spec.name)
        policies = PolicyTable()
        result, rows = _rows(spec, policies)
        if result.sha256 == stored.sha256:  # touched, same bytes
            os.link(previous / stored.file, target)
            new.lists.append(replace(stored, size=result.size, mtime=result.mtime))
            continue
        if _has_ip_triggers(rows, previous / stored.file):
            # The step covers names and their subtrees; response-IP triggers (`rpz-ip`
            # owners) are not walked that way, so a list holding any is built in full.
            return None
        fresh = _store_list(spec, result, rows, policies, target)
        new.lists.append(fresh)
        if fresh.policies == stored.policies:
            changed |= changed_names(previous / stored.file, target)
        else:  # the numbering of the list's policies moved: every name of it may differ
            changed |= {name for name, _, _ in rows}
            changed |= set(_all_names(previous / stored.file))
    new.save()
    before, after = View(old), View(new)
    try:
        deleted, added = difference(changed, Owners(before, settings), Owners(after, settings))
    finally:
        before.close()
        after.close()
    return Step(deleted, added, reparsed)


def _has_ip_triggers(rows: list[tuple[bytes, int, int]], stored: Path) -> bool:
    """Whether a list's new rows or its stored entries hold a response-IP trigger."""
    if any(match & MATCH_IP for _, match, _ in rows):
        return True
    with open(stored, "rb", buffering=_BUFFER) as lines:
        return any(int(line.split(b"\t", 2)[1]) & MATCH_IP for line in lines)


def _all_names(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=_BUFFER) as lines:
        for line in lines:
            yield unkey(line.split(b"\t", 1)[0])


def list_state(spec: ListSpec) -> tuple[int, float] | None:
    """(size, mtime) of a list's files now; None if they cannot be listed."""
    with contextlib.suppress(ListFileError, OSError):
        parts = resolve_parts(spec.path)
        return parts.size, parts.mtime
    return None
