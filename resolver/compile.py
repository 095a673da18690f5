"""Lists -> index: parse every configured list, resolve precedence, write the compiled index.

Precedence (README "Matching"): at one name, an allow entry beats a block entry, and among entries
of one kind the first list in config order wins. The index keeps, per distinct name, one policy for
the name itself and one for the names below it; the most-specific-wins walk happens at lookup.
Both rules reduce to "lowest rank wins", with ranks assigned to policy ids by `Policy.precedence`.
The entries that lose at a name are kept too (`Merged`), in a side table for client groups.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resolver.index import Index, IndexData, IndexError_, hash_name, open_index, save_index
from resolver.iptrie import IpTables, build_tables
from resolver.lists import parse_list
from resolver.lists.detect import detect_format
from resolver.lists.files import ListFile, ListFileError, resolve_parts
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.policy import MATCH_BELOW, MATCH_IP, MATCH_SELF, PolicyTable

# Re-exported: defined apart so that the serving processes can use them without numpy.
from resolver.provenance import CompileError as CompileError
from resolver.provenance import header_is_current as header_is_current
from resolver.provenance import spec_from_json as spec_from_json
from resolver.provenance import spec_json as spec_json

if TYPE_CHECKING:
    import numpy.typing as npt

    from resolver.index import U16, U32, U64

Progress = Callable[[str, int, int], None]  # (list name, bytes read, total bytes)


log = logging.getLogger("blokir")


def specs_from_paths(paths: Sequence[str]) -> list[ListSpec]:
    """Lists named on the command line (`blokir compile LIST...`, `blokir verify --list`): one
    list each, named after the file (made unique), format detected."""
    specs = []
    seen: set[str] = set()
    for i, raw in enumerate(paths):
        path = Path(raw)
        name = path.stem or f"list{i}"
        while name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        specs.append(ListSpec(name=name, path=str(path.resolve()), list_index=i))
    return specs


@dataclass(slots=True)
class ListResult:
    spec: ListSpec
    report: ParseReport
    unique: int = 0
    sha256: str = ""
    size: int = 0
    mtime: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.report.entries - self.unique

    def to_json(self) -> dict[str, object]:
        return {
            "spec": spec_json(self.spec),
            "list": self.spec.name,
            "path": self.spec.path,
            "category": self.spec.category,
            "action": self.spec.action.value,
            "sha256": self.sha256,
            "size": self.size,
            "mtime": self.mtime,
            "unique": self.unique,
            "duplicates": self.duplicates,
            **self.report.to_json(),
        }


@dataclass(slots=True)
class CompileResult:
    data: IndexData
    lists: list[ListResult] = field(default_factory=list)
    seconds: float = 0.0


class _HashingReader:
    """Feeds a parser while computing the sha256 of the list's bytes (decompressed, every part
    in order) for the index header, so the list is read once."""

    def __init__(
        self, raw: ListFile, digest: Any, on_progress: Callable[[int], None] | None
    ) -> None:
        self._raw = raw
        self.digest = digest
        self._on_progress = on_progress

    def read(self, n: int = -1) -> bytes:
        block = self._raw.read(n)
        self.digest.update(block)
        if self._on_progress is not None:
            self._on_progress(self._raw.consumed)
        return block


def sorted_unique(values: U64) -> U64:
    """np.unique without its hash-table path, which numpy 2.x takes for integers and which
    measured 7x slower than sort-and-compare on 1M uint64 here."""
    ordered = np.sort(values)
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def ranked_pairs(hashes: U64, ranks: U16) -> tuple[U64, U16, npt.NDArray[np.bool_]]:
    """The distinct (hash, rank) pairs sorted by hash, then rank, and a mask of the first pair of
    each hash (the winner by precedence; the others are the entries it shadows)."""
    if ranks.size and int(ranks.min()) == int(ranks.max()):
        keys = sorted_unique(hashes)  # one rank: a plain sort is enough (the common case)
        return keys, np.full(keys.size, ranks[0], dtype=np.uint16), np.ones(keys.size, bool)
    order = np.lexsort((ranks, hashes))
    sorted_hashes = hashes[order]
    sorted_ranks = ranks[order]
    new_hash = np.ones(sorted_hashes.size, dtype=bool)
    new_hash[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
    keep = new_hash.copy()
    keep[1:] |= sorted_ranks[1:] != sorted_ranks[:-1]
    return sorted_hashes[keep], sorted_ranks[keep], new_hash[keep]


@dataclass(slots=True)
class Merged:
    """One kind's (self or below) entries after precedence: per distinct hash the winning policy
    id, and apart the entries that lost at the same hash (sorted by hash, then precedence), which
    client groups need when the winner's list is not theirs."""

    keys: U64
    pids: U16
    shadow_keys: U64
    shadow_pids: U16

    def pairs(self) -> tuple[U64, U16]:
        """Every distinct (hash, policy id), winners and shadowed: the input of a later merge."""
        if not self.shadow_keys.size:
            return self.keys, self.pids
        return (
            np.concatenate([self.keys, self.shadow_keys]),
            np.concatenate([self.pids, self.shadow_pids]),
        )


def merge_entries(parts: list[tuple[U64, U16]], rank_lut: U16, pid_lut: U16) -> Merged:
    """Merge (hashes, policy ids) parts: sorted unique hashes, each with the policy id of the
    lowest precedence rank it was given, and the other distinct policy ids at each hash."""
    if not parts:
        empty_keys, empty_pids = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint16)
        return Merged(empty_keys, empty_pids, empty_keys, empty_pids)
    hashes = np.concatenate([h for h, _ in parts])
    pids = np.concatenate([p for _, p in parts])
    keys, ranks, first = ranked_pairs(hashes, rank_lut[pids])
    if bool(first.all()):
        return Merged(keys, pid_lut[ranks], keys[:0], pid_lut[ranks[:0]])
    lost = ~first
    return Merged(keys[first], pid_lut[ranks[first]], keys[lost], pid_lut[ranks[lost]])


def hash_batch(batch: Batch) -> U64:
    return np.fromiter(map(hash_name, batch.names), dtype=np.uint64, count=len(batch.names))


def rank_tables(policies: PolicyTable) -> tuple[U16, U16]:
    """Lookup arrays rank_of[pid] and pid_of[rank]. Ranks order policy ids by precedence (ties
    by id); adding policies later never reorders earlier ones, so per-list merges stay valid."""
    order = sorted(range(1, len(policies) + 1), key=lambda p: (*policies.get(p).precedence(), p))
    rank_of = np.zeros(len(policies) + 1, dtype=np.uint16)
    pid_of = np.zeros(len(policies) + 1, dtype=np.uint16)
    for rank, pid in enumerate(order, start=1):
        rank_of[pid] = rank
        pid_of[rank] = pid
    return rank_of, pid_of


def open_list(
    spec: ListSpec, policies: PolicyTable, progress: Progress | None = None
) -> tuple[ListResult, Iterator[Batch]]:
    """Start parsing one list: its ListResult, and the batches, which fill the result in as they
    are consumed (report counters, sha256 of the bytes read). A list in parts (a glob) is read
    part after part into one report, its format detected from the first part."""
    try:
        parts = resolve_parts(spec.path)
    except ListFileError as exc:
        raise CompileError(f"list {spec.name!r}: {exc}") from exc
    report = ParseReport(path=spec.path, parts=len(parts.files))
    result = ListResult(spec, report, size=parts.size, mtime=parts.mtime)

    def batches() -> Iterator[Batch]:
        digest = hashlib.sha256()
        resolved = spec
        done_before = 0
        for part, part_size in zip(parts.files, parts.sizes, strict=True):
            on_bytes = None
            if progress is not None:

                def on_bytes(done: int, before: int = done_before) -> None:
                    progress(spec.name, before + done, parts.size)

            try:
                with ListFile(part) as file:
                    if resolved.format == "auto" and spec.kind != "ip":
                        fmt = detect_format(file.peek(64 << 10), file.name)
                        resolved = _with_format(spec, fmt)
                    report.where = str(part)
                    reader = _HashingReader(file, digest, on_bytes)
                    # The reader is duck-typed as a binary stream: parsers only call read(n).
                    yield from parse_list(reader, resolved, policies, report)  # type: ignore[arg-type]
            except ListFileError as exc:
                raise CompileError(f"list {spec.name!r}: {exc}") from exc
            done_before += part_size
        result.sha256 = digest.hexdigest()

    return result, batches()


def _with_format(spec: ListSpec, fmt: str) -> ListSpec:
    return replace(spec, format=fmt)


def compile_lists(specs: Iterable[ListSpec], progress: Progress | None = None) -> CompileResult:
    """Parse every list and build the index arrays in memory (no file written)."""
    started = time.perf_counter()
    policies = PolicyTable()
    results: list[ListResult] = []
    self_parts: list[Merged] = []
    below_parts: list[Merged] = []
    ip_triggers = IpTriggers()
    for spec in specs:
        list_self: list[tuple[U64, U16]] = []
        list_prefixes: set[bytes] = set()  # this list's distinct response-IP triggers
        list_below: list[tuple[U64, U16]] = []
        result, batches = open_list(spec, policies, progress)
        for batch in batches:
            if not batch.names:
                continue
            if batch.match & MATCH_IP:
                ip_triggers.add(batch)
                list_prefixes.update(batch.names)
                continue
            hashes = hash_batch(batch)
            pids = np.full(hashes.size, batch.pid, dtype=np.uint16)
            if batch.match & MATCH_SELF:
                list_self.append((hashes, pids))
            if batch.match & MATCH_BELOW:
                list_below.append((hashes, pids))
        # Deduplicate within the list now, so memory holds distinct names, not raw lines (and
        # distinct policy ids per name: a list may give one name more than one policy).
        rank_lut, pid_lut = rank_tables(policies)
        self_part = merge_entries(list_self, rank_lut, pid_lut)
        if _same_parts(list_self, list_below):  # subtree lists: one merge serves both scopes
            below_part = self_part
        else:
            below_part = merge_entries(list_below, rank_lut, pid_lut)
        result.unique = _count_distinct(self_part.keys, below_part.keys) + len(list_prefixes)
        self_parts.append(self_part)
        below_parts.append(below_part)
        results.append(result)

    rank_lut, pid_lut = rank_tables(policies)
    self_merged = _merge_lists(self_parts, rank_lut, pid_lut)
    if all(a is b for a, b in zip(self_parts, below_parts, strict=True)):
        below_merged = self_merged
    else:
        below_merged = _merge_lists(below_parts, rank_lut, pid_lut)
    data = _assemble(self_merged, below_merged)
    data.policies = list(policies.policies)
    data.ip_entries = sorted({ip for r in results for ip in r.report.ip_entries})
    data.ip_tables = ip_triggers.tables(policies)
    return CompileResult(data, results, time.perf_counter() - started)


def _merge_lists(parts: list[Merged], rank_lut: U16, pid_lut: U16) -> Merged:
    """The lists' merged entries merged again across lists (one list: as it is)."""
    if len(parts) == 1:
        return parts[0]
    return merge_entries([part.pairs() for part in parts], rank_lut, pid_lut)


class IpTriggers:
    """Response-IP trigger prefixes of every list, as (network, length, pid) per family."""

    def __init__(self) -> None:
        self.v4: list[tuple[int, int, int]] = []
        self.v6: list[tuple[int, int, int]] = []

    def add(self, batch: Batch) -> None:
        for text in batch.names:
            address, _, length = text.partition(b"/")
            packed = ipaddress.ip_address(address.decode("ascii")).packed
            family = self.v4 if len(packed) == 4 else self.v6
            family.append((int.from_bytes(packed), int(length), batch.pid))

    def tables(self, policies: PolicyTable) -> IpTables:
        rank_of, _ = rank_tables(policies)
        return build_tables(self.v4, self.v6, rank_of.tolist())


def _same_parts(a: list[tuple[U64, U16]], b: list[tuple[U64, U16]]) -> bool:
    return len(a) == len(b) and all(
        x[0] is y[0] and x[1] is y[1] for x, y in zip(a, b, strict=True)
    )


def _count_distinct(self_keys: U64, below_keys: U64) -> int:
    if self_keys is below_keys or np.array_equal(self_keys, below_keys):
        return int(self_keys.size)
    return int(sorted_unique(np.concatenate([self_keys, below_keys])).size)


def _assemble(self_merged: Merged, below_merged: Merged) -> IndexData:
    self_keys, below_keys = self_merged.keys, below_merged.keys
    if self_keys is below_keys or np.array_equal(self_keys, below_keys):
        keys = self_keys  # subtree lists: same keys
        self_col, below_col = self_merged.pids, below_merged.pids
    else:
        keys = sorted_unique(np.concatenate([self_keys, below_keys]))
        self_col = np.zeros(keys.size, dtype=np.uint16)
        below_col = np.zeros(keys.size, dtype=np.uint16)
        self_col[np.searchsorted(keys, self_keys)] = self_merged.pids
        below_col[np.searchsorted(keys, below_keys)] = below_merged.pids
    data = IndexData(keys, self_col, below_col, [])
    data.shadow_slots, data.shadow_offsets, data.shadow_pids = shadow_table(
        keys, self_merged, below_merged
    )
    return data


def shadow_table(keys: U64, self_merged: Merged, below_merged: Merged) -> tuple[U32, U32, U16]:
    """The shadowed entries by key slot (resolver/index.py, "Shadowed entries"): the sorted slots
    that have any, and for the i-th such slot its self entries at pids[offsets[2i]:offsets[2i+1]]
    and its below entries at pids[offsets[2i+1]:offsets[2i+2]], each run in precedence order."""
    self_at = np.searchsorted(keys, self_merged.shadow_keys)
    below_at = np.searchsorted(keys, below_merged.shadow_keys)
    slots = sorted_unique(np.concatenate([self_at, below_at]).astype(np.uint64))
    runs = np.concatenate(
        [
            2 * np.searchsorted(slots, self_at.astype(np.uint64)),
            2 * np.searchsorted(slots, below_at.astype(np.uint64)) + 1,
        ]
    )
    # A stable sort keeps each run in the precedence order the merge left it in.
    order = np.argsort(runs, kind="stable")
    pids = np.concatenate([self_merged.shadow_pids, below_merged.shadow_pids])[order]
    offsets = np.zeros(2 * slots.size + 1, dtype=np.uint32)
    np.cumsum(np.bincount(runs, minlength=2 * slots.size), out=offsets[1:])
    return slots.astype(np.uint32), offsets, pids.astype(np.uint16)


def write_index(result: CompileResult, path: str | os.PathLike[str]) -> int:
    """Save a compile result with its provenance (sources, checksums, reports) in the header."""
    result.data.meta = {
        "build_seconds": round(result.seconds, 3),
        "sources": [r.to_json() for r in result.lists],
    }
    return save_index(result.data, path)


def stderr_progress() -> Progress | None:
    """A one-line progress display on a terminal; None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.1 and done < total:
            return
        last[0] = now
        fraction = done / total if total else 1.0
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r{name[:24]:<24} [{bar:<30}] {fraction:6.1%}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


@dataclass(slots=True)
class NamedEntries:
    """The merged policy by name, for exporters (which need names, not hashes): per name, the
    policy id for the name itself and for the names below it (0 = none)."""

    policies: PolicyTable
    entries: dict[bytes, tuple[int, int]]
    lists: list[ListResult]
    # Response-IP triggers: canonical prefix (`192.0.2.0/24`) -> policy id.
    ip: dict[bytes, int] = field(default_factory=dict)


def collect_names(specs: Iterable[ListSpec]) -> NamedEntries:
    """Parse every list and resolve precedence per name, keeping the names. Uses far more memory
    than `compile_lists` (a dict of every name): meant for exports, not for 10M-name serving."""
    policies = PolicyTable()
    results: list[ListResult] = []
    raw: list[Batch] = []
    for spec in specs:
        result, batches = open_list(spec, policies)
        raw.extend(batch for batch in batches if batch.names)
        results.append(result)
    rank_lut, _ = rank_tables(policies)
    best: dict[bytes, list[int]] = {}
    ip: dict[bytes, int] = {}
    for batch in raw:
        rank = int(rank_lut[batch.pid])
        if batch.match & MATCH_IP:
            for prefix in batch.names:
                old = ip.get(prefix)
                if old is None or rank < int(rank_lut[old]):
                    ip[prefix] = batch.pid
            continue
        for name in batch.names:
            slots = best.get(name)
            if slots is None:
                slots = best[name] = [0, 0, 0, 0]  # self pid, self rank, below pid, below rank
            if batch.match & MATCH_SELF and (slots[0] == 0 or rank < slots[1]):
                slots[0], slots[1] = batch.pid, rank
            if batch.match & MATCH_BELOW and (slots[2] == 0 or rank < slots[3]):
                slots[2], slots[3] = batch.pid, rank
    entries = {name: (s[0], s[2]) for name, s in best.items()}
    return NamedEntries(policies, entries, results, ip)


def index_is_current(index: Index, specs: list[ListSpec]) -> bool:
    """Whether an index was built from exactly these list settings, in this order, from files
    unchanged since (same size and mtime). Any change to a list's action, category, scope or
    landing addresses in the config means a rebuild, not a stale policy (`header_is_current`)."""
    return header_is_current(index.header, specs)


def current_index(path: Path, specs: list[ListSpec]) -> Index | None:
    """The index at `path`, opened, when it exists, reads cleanly and was built from exactly
    these lists; None when it is missing, stale or unreadable (the caller compiles)."""
    if not path.exists():
        return None
    try:
        index = open_index(path)
    except IndexError_ as exc:
        log.warning("ignoring the compiled index: %s", exc)
        return None
    if index_is_current(index, specs):
        return index
    index.close()
    return None


def compile_temporary(specs: list[ListSpec], prefix: str = "blokir-") -> tuple[Index, Path]:
    """Compile into a temporary file and open it; the caller closes it and unlinks the path."""
    result = compile_lists(specs)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".blkx")
    os.close(fd)
    write_index(result, name)
    return open_index(name), Path(name)
