"""The compiled, memory-mapped blocklist index.

Layout: every normalised name is hashed with xxh3_64. The distinct hashes are stored sorted in one
uint64 array, with two parallel uint16 arrays of policy ids (the number of a policy in the
index's policy table, from 1): `self_pid` (the policy for the name itself) and `below_pid` (the
policy for names strictly below it); 0 means none (those are the sections' names in the file). A
directory of 2^k + 1 uint32 offsets, indexed by the top k bits of a hash, gives the run of keys
that share those bits, so a probe reads two directory words and on average about one key: no
collision chains, no empty slots, and a build that is one numpy sort.

Denser than an open-addressing hash table with the same hash: at 10M names it takes
80 MB of keys, 40 MB of policy ids and 32 MB of directory, and a miss costs one bucket read.

False matches: two different names share a 64-bit hash with probability 2^-64, so a probe of a
name that is not listed falsely matches one of n entries with probability about n / 2^64
(5e-13 per probe at 10M entries). Not zero; stated in the README.

Shadowed entries: the columns keep one policy per name and kind, the winner by precedence. The
entries that lost at the same name and kind are kept apart (`shadow_slots`, `shadow_offsets`,
`shadow_pids`), read only by client groups whose list is not the winner's
(`_make_group_matcher`); the default lookup never reads them.

The file is mapped read-only, so opening is instant and worker processes share the pages.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import mmap
import os
import re
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import xxhash

from resolver.iptrie import (
    COLUMN_FORMATS,
    DIR_BITS,
    Format,
    IpMatcher,
    IpTables,
    empty_tables,
    matcher_of,
)
from resolver.policy import Policy

if TYPE_CHECKING:
    # numpy is imported where arrays are built or read whole (compile, tools), never at module
    # level: the server maps the index through memoryviews, and numpy costs each of its
    # processes about 15 MiB of memory.
    import numpy as np
    import numpy.typing as npt


# Aliases that exist at run time as strings: the compiled build (setup.py) evaluates the
# annotations of IndexData's fields, and numpy is not imported outside type checking.
U64: TypeAlias = "npt.NDArray[np.uint64]"
U16: TypeAlias = "npt.NDArray[np.uint16]"
U32: TypeAlias = "npt.NDArray[np.uint32]"

MAGIC = b"BLOKIRX\x00"
# 2: the shadowed-entries sections (client groups); a version-1 file lacks them and is refused
# (the server then compiles its lists again, resolver/compile.py `current_index`).
VERSION = 2
HASH_NAME = "xxh3_64"
# magic, version, header length, header crc32, reserved
_PREAMBLE = struct.Struct("<8sIIII")
_ALIGN = 64  # sections start on cache-line boundaries
# Upper bound on the JSON header: policy tables and source lists are small; a bigger value means
# a corrupt file, not a real index.
MAX_HEADER_BYTES = 64 << 20

hash_name = xxhash.xxh3_64_intdigest


class IndexError_(Exception):
    """An index file that cannot be used: the message says which file and why."""


def directory_bits(count: int) -> int:
    """Buckets ~ entries / 2: on average two keys share a bucket. Measured against one key per
    bucket: the same lookup speed within noise and half the directory memory (32 vs 64 MB at
    10M entries)."""
    return max(1, (max(count, 1) - 1).bit_length() - 1)


@dataclass(slots=True)
class IndexData:
    """The arrays of an index, in memory (after a build) or mapped (after `open_index`)."""

    keys: U64
    self_pid: U16
    below_pid: U16
    policies: list[Policy]
    meta: dict[str, Any] = field(default_factory=dict)
    ip_entries: list[str] = field(default_factory=list)
    ip_tables: IpTables | None = None  # response-IP triggers (resolver/iptrie.py)
    # Shadowed entries (see `_make_group_matcher`): sorted slots, 2 offsets per slot, policy ids.
    shadow_slots: U32 = field(default_factory=lambda: _empty("uint32"))
    shadow_offsets: U32 = field(default_factory=lambda: _empty("uint32", 1))
    shadow_pids: U16 = field(default_factory=lambda: _empty("uint16"))

    def __len__(self) -> int:
        return int(self.keys.size)


def _empty(dtype: str, size: int = 0) -> Any:
    import numpy as np

    return np.zeros(size, dtype=dtype)


def filter_bits(count: int) -> int:
    """A one-hash bit filter of 8 to 16 bits per entry (about 6-12% false positives) answers
    most misses before the directory is read: most query names are not listed, and measured
    here it cut a 3-label miss from 1.25 to 0.85 us. 16 MiB at 10M entries."""
    return max(3, max(count, 1).bit_length())


def build_filter(keys: U64, bits: int) -> npt.NDArray[np.uint8]:
    """Byte `h >> (64 - bits)`, bit `h & 7`: top bits pick the byte, low bits the bit."""
    import numpy as np

    table = np.zeros(1 << bits, dtype=np.uint8)
    if keys.size:
        positions = (keys >> np.uint64(64 - bits)).astype(np.int64)
        masks = np.left_shift(np.uint8(1), (keys & np.uint64(7)).astype(np.uint8))
        np.bitwise_or.at(table, positions, masks)
    return table


def build_directory(keys: U64, bits: int) -> U32:
    import numpy as np

    buckets = (keys >> np.uint64(64 - bits)).astype(np.int64)
    counts = np.bincount(buckets, minlength=1 << bits)
    directory = np.zeros((1 << bits) + 1, dtype=np.uint32)
    np.cumsum(counts, out=directory[1:])
    return directory


def save_index(data: IndexData, path: str | os.PathLike[str]) -> int:
    """Write the index atomically (temporary file in the same directory, then rename), so a
    server mapping the old file never sees a half-written one. Returns the file size."""
    import numpy as np

    keys = np.ascontiguousarray(data.keys, dtype=np.uint64)
    if keys.size and not bool(np.all(keys[1:] > keys[:-1])):
        raise ValueError("index keys must be sorted and unique")
    bits = directory_bits(int(keys.size))
    fbits = filter_bits(int(keys.size))
    sections: list[tuple[str, bytes | memoryview]] = [
        ("filter", build_filter(keys, fbits).data.cast("B")),
        ("directory", build_directory(keys, bits).data.cast("B")),
        ("keys", keys.data.cast("B")),
        ("self_pid", np.ascontiguousarray(data.self_pid, dtype=np.uint16).data.cast("B")),
        ("below_pid", np.ascontiguousarray(data.below_pid, dtype=np.uint16).data.cast("B")),
        ("ip_entries", "\n".join(data.ip_entries).encode("ascii")),
        ("shadow_slots", np.ascontiguousarray(data.shadow_slots, np.uint32).data.cast("B")),
        ("shadow_offsets", np.ascontiguousarray(data.shadow_offsets, np.uint32).data.cast("B")),
        ("shadow_pids", np.ascontiguousarray(data.shadow_pids, np.uint16).data.cast("B")),
    ]
    ip_tables = data.ip_tables or empty_tables()
    sections += [(name, memoryview(column).cast("B")) for name, column in ip_tables.columns()]
    layout: dict[str, list[int]] = {}
    offset = 0
    for name, blob in sections:
        layout[name] = [offset, len(blob)]
        offset = _aligned(offset + len(blob))
    header: dict[str, Any] = {
        "format": "blokir-index",
        "version": VERSION,
        "hash": HASH_NAME,
        "count": int(keys.size),
        "dir_bits": bits,
        "filter_bits": fbits,
        "sections": layout,
        "data_bytes": offset,
        "policies": [p.to_json() for p in data.policies],
        "created": time.time(),
        **data.meta,
    }
    data_hash = xxhash.xxh3_64()
    for _, blob in sections:
        data_hash.update(blob)
        data_hash.update(bytes(_aligned(len(blob)) - len(blob)))
    header["data_xxh3"] = data_hash.hexdigest()
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    data_start = _aligned(_PREAMBLE.size + len(header_bytes))
    preamble = _PREAMBLE.pack(MAGIC, VERSION, len(header_bytes), zlib.crc32(header_bytes), 0)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(preamble)
            out.write(header_bytes)
            out.write(bytes(data_start - _PREAMBLE.size - len(header_bytes)))
            for _, blob in sections:
                out.write(blob)
                out.write(bytes(_aligned(len(blob)) - len(blob)))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return data_start + offset


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass(frozen=True, slots=True)
class Match:
    """A lookup result: the policy id, and the listed name that matched (the query name itself or
    one of its parents), with whether it matched as the name itself or as a parent."""

    policy_id: int
    name: bytes
    as_parent: bool


class Index:
    """A mapped index file. Lookups use memoryviews over the mapping: no per-lookup allocation
    beyond the suffix slices, and nothing copied at open."""

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.path = str(path)
        self._views: list[memoryview] = []
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _PREAMBLE.size:
                    raise IndexError_(f"{path}: not a blokir index (file too short: {size} bytes)")
                self._map: mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise IndexError_(f"{path}: cannot open index: {exc.strerror or exc}") from exc
        try:
            self.header = self._read_header(size)
            self._bind_sections(verify)
        except BaseException:
            self.close()
            raise

    def _read_header(self, size: int) -> dict[str, Any]:
        magic, version, header_len, header_crc, _ = _PREAMBLE.unpack_from(self._map, 0)
        if magic != MAGIC:
            raise IndexError_(f"{self.path}: not a blokir index (bad magic {magic!r})")
        if version != VERSION:
            raise IndexError_(
                f"{self.path}: index version {version}, this blokir reads version {VERSION}: "
                "recompile it with `blokir compile`"
            )
        if header_len > MAX_HEADER_BYTES or _PREAMBLE.size + header_len > size:
            raise IndexError_(f"{self.path}: truncated or corrupt index header")
        raw = self._map[_PREAMBLE.size : _PREAMBLE.size + header_len]
        if zlib.crc32(raw) != header_crc:
            raise IndexError_(f"{self.path}: corrupt index header (checksum mismatch)")
        header: dict[str, Any] = json.loads(raw)
        if header.get("hash") != HASH_NAME:
            raise IndexError_(f"{self.path}: unsupported hash {header.get('hash')!r}")
        self._data_start = _aligned(_PREAMBLE.size + header_len)
        expected = self._data_start + int(header["data_bytes"])
        if size != expected:
            raise IndexError_(
                f"{self.path}: truncated or corrupt index: {size} bytes, header says {expected}"
            )
        return header

    def _bind_sections(self, verify: bool) -> None:
        header = self.header
        whole = memoryview(self._map)
        self._views = [whole]
        if verify:
            digest = xxhash.xxh3_64_hexdigest(whole[self._data_start :])
            if digest != header["data_xxh3"]:
                raise IndexError_(f"{self.path}: corrupt index data (checksum mismatch)")

        def section(name: str, fmt: Literal["B", "H", "I", "Q"]) -> memoryview:
            offset, length = header["sections"][name]
            start = self._data_start + offset
            view = whole[start : start + length].cast(fmt)
            self._views.append(view)
            return view

        count = int(header["count"])
        self.dir_bits = int(header["dir_bits"])
        self.filter_bits = int(header["filter_bits"])
        self._filter = section("filter", "B")
        self._directory = section("directory", "I")
        self._keys = section("keys", "Q")
        self._self_policy_ids = section("self_pid", "H")
        self._below_policy_ids = section("below_pid", "H")
        if (
            len(self._keys) != count
            or len(self._self_policy_ids) != count
            or len(self._below_policy_ids) != count
            or len(self._filter) != 1 << self.filter_bits
            or len(self._directory) != (1 << self.dir_bits) + 1
            or self._directory[-1] != count
        ):
            raise IndexError_(f"{self.path}: corrupt index (section sizes disagree)")
        self.policies = [Policy.from_json(p) for p in header["policies"]]
        if count and not (
            policy_ids_within(self._self_policy_ids, len(self.policies))
            and policy_ids_within(self._below_policy_ids, len(self.policies))
        ):
            raise IndexError_(f"{self.path}: corrupt index (policy id out of range)")
        self.count = count
        self.ip_match = self._bind_ip_sections(section)
        self._shadow_slots = section("shadow_slots", "I")
        self._shadow_offsets = section("shadow_offsets", "I")
        self._shadow_pids = section("shadow_pids", "H")
        self._check_shadow_sections()
        sections = (
            self._filter,
            64 - self.filter_bits,
            self._directory,
            64 - self.dir_bits,
            self._keys,
            self._self_policy_ids,
            self._below_policy_ids,
        )
        self.match_policy_id = _make_matcher(*sections)
        # Client groups (resolver/groups.py): the same walk over the same mapping, passing over
        # the entries of lists a group does not take.
        self.match_policy_id_in = _make_group_matcher(
            *sections, self._shadow_slots, self._shadow_offsets, self._shadow_pids
        )

    def _check_shadow_sections(self) -> None:
        """Sizes and policy ids of the shadowed-entries table, so a corrupt file is refused at
        open rather than failing at lookup (runs are read as slices, which clamp: no other value
        can index out of bounds). Checked without a Python loop over the entries."""
        slots, offsets, pids = self._shadow_slots, self._shadow_offsets, self._shadow_pids
        if not (
            len(offsets) == 2 * len(slots) + 1
            and offsets[-1] == len(pids)
            and policy_ids_within(pids, len(self.policies))
        ):
            raise IndexError_(f"{self.path}: corrupt index (shadowed-entries sections disagree)")

    def policy_ids_at(self, slot: int, below: bool) -> list[int]:
        """Every policy id of one kind at a key slot in precedence order: the winner, then the
        entries it shadows. For tools (`match`)."""
        first = (self._below_policy_ids if below else self._self_policy_ids)[slot]
        if not first:
            return []
        found = [first]
        i = bisect.bisect_left(self._shadow_slots, slot)
        if i < len(self._shadow_slots) and self._shadow_slots[i] == slot:
            run = 2 * i + below
            found += self._shadow_pids[self._shadow_offsets[run] : self._shadow_offsets[run + 1]]
        return found

    def _bind_ip_sections(self, section: Callable[[str, Format], memoryview]) -> IpMatcher:
        """The response-IP trigger columns; an index written before they existed has none."""
        names = self.header["sections"]
        if not all(name in names for name in COLUMN_FORMATS):
            return matcher_of(empty_tables())
        columns = {name: section(name, fmt) for name, fmt in COLUMN_FORMATS.items()}
        v4 = len(columns["ip4_start"])
        v6 = len(columns["ip6_hi"])
        if not (
            v4
            and v6
            and len(columns["ip4_pid"]) == len(columns["ip4_len"]) == v4
            and len(columns["ip6_lo"]) == len(columns["ip6_pid"]) == len(columns["ip6_len"]) == v6
            and columns["ip4_start"][0] == columns["ip6_hi"][0] == columns["ip6_lo"][0] == 0
            and len(columns["ip4_dir"]) == len(columns["ip6_dir"]) == (1 << DIR_BITS) + 1
            and columns["ip4_dir"][-1] == v4
            and columns["ip6_dir"][-1] == v6
        ):
            raise IndexError_(f"{self.path}: corrupt index (IP trigger sections disagree)")
        limit = len(self.policies)
        if not (
            policy_ids_within(columns["ip4_pid"], limit)
            and policy_ids_within(columns["ip6_pid"], limit)
        ):
            raise IndexError_(f"{self.path}: corrupt index (IP trigger policy id out of range)")
        return IpMatcher(columns)

    def match(self, name: bytes, allowed: bytes | None = None) -> Match | None:
        """The most specific entry covering `name` (lower-case ASCII, no trailing dot): the name
        itself when it has a `self` policy, else the nearest parent with a `below` policy.
        Entries always have at least two labels, so the bare TLD is never probed. `allowed`:
        a client group's policy ids (as `match_policy_id_in`). For tools; the server uses the
        faster `match_policy_id`."""
        import numpy as np

        keys, self_ids, below_ids = self.arrays()
        candidates = [(name, self_ids, False)]
        rest = name
        while rest.count(b".") >= 2:
            rest = rest.partition(b".")[2]
            candidates.append((rest, below_ids, True))
        if b"." not in name:
            return None
        for candidate, policy_ids, as_parent in candidates:
            h = np.uint64(hash_name(candidate))
            slot = int(np.searchsorted(keys, h))
            if slot < keys.size and keys[slot] == h and policy_ids[slot]:
                for policy_id in self.policy_ids_at(slot, as_parent):
                    if allowed is None or allowed[policy_id]:
                        return Match(policy_id, candidate, as_parent)
        return None

    def policy(self, policy_id: int) -> Policy:
        return self.policies[policy_id - 1]

    # -- whole-index access (tools, tests) --------------------------------------------------

    def arrays(self) -> tuple[U64, U16, U16]:
        """Zero-copy numpy views over the mapped sections."""
        import numpy as np

        return (
            np.frombuffer(self._keys, dtype=np.uint64),
            np.frombuffer(self._self_policy_ids, dtype=np.uint16),
            np.frombuffer(self._below_policy_ids, dtype=np.uint16),
        )

    def ip_entries(self) -> list[str]:
        offset, length = self.header["sections"]["ip_entries"]
        start = self._data_start + offset
        text = bytes(self._map[start : start + length]).decode("ascii")
        return text.split("\n") if text else []

    def close(self) -> None:
        for view in reversed(self._views):
            view.release()
        self._views = []
        mapping = getattr(self, "_map", None)
        if mapping is not None and not mapping.closed:
            # numpy arrays from arrays() may still point into the mapping; it is then unmapped
            # when the last of them is garbage collected.
            with contextlib.suppress(BufferError):
                mapping.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_index(path: str | os.PathLike[str], *, verify: bool = True) -> Index:
    return Index(path, verify=verify)


# Policy ids checked per step: the temporaries stay at a few hundred KiB, so a worker's heap does
# not grow by the size of a 10M-entry column just to check it once.
_POLICY_ID_CHECK_STEP = 1 << 16
_LATIN1_MAX = 0xFF
_BELOW_SURROGATES = 0xD7FF


def policy_ids_within(policy_ids: memoryview, limit: int) -> bool:
    """Whether every policy id in `policy_ids` (a section of little-endian uint16) is at most
    `limit`.

    Every worker checks both columns each time it maps an index, and without numpy (which the
    serving processes do not load, and which a worker that has dropped privileges may not be
    able to import): the bytes are decoded as UTF-16-LE, which rejects lone surrogates
    (0xD800-0xDFFF, all out of range below 55296 policies), and then checked in C loops. Below
    256 policies, Latin-1 encoding fails on any id above 255 and otherwise gives the ids as
    bytes, and deleting the allowed values must leave nothing: about 1 ms per million ids here.
    Up to 0xD7FF a regular expression finds an id above the limit (about 5 ms per million); past
    that, a plain max() (20 times slower than the first; no real config has 55k policies)."""
    if limit > _BELOW_SURROGATES:
        return not len(policy_ids) or max(policy_ids.cast("B").cast("H")) <= limit
    small = limit <= _LATIN1_MAX
    allowed = bytes(range(limit + 1)) if small else b""
    above = None if small else re.compile(f"[^\\x00-\\u{limit:04x}]")
    raw = policy_ids.cast("B")
    step = 2 * _POLICY_ID_CHECK_STEP
    for start in range(0, len(raw), step):
        try:
            ids = str(raw[start : start + step], "utf-16-le")
            if above is None:
                if ids.encode("latin-1").translate(None, allowed):
                    return False
            elif above.search(ids):
                return False
        except UnicodeError:  # a lone surrogate, or an id above 255 for Latin-1
            return False
    return True


def _make_matcher(
    bit_filter: memoryview,
    filter_shift: int,
    directory: memoryview,
    dir_shift: int,
    keys: memoryview,
    self_ids: memoryview,
    below_ids: memoryview,
) -> Callable[[bytes], int]:
    """The server's lookup: name -> policy id (0 = none), most specific first.

    This is the measured hot path, so it is one closure over local variables with the probe
    written out twice instead of a helper call: in CPython each avoided call or attribute
    lookup is visible in queries/s. bytes.find beat partition and split in measurements here."""
    h = hash_name

    def match_policy_id(name: bytes) -> int:
        dot = name.find(b".")
        if dot < 0:
            return 0
        x = h(name)
        if bit_filter[x >> filter_shift] >> (x & 7) & 1:
            bucket = x >> dir_shift
            lo = directory[bucket]
            hi = directory[bucket + 1]
            while lo < hi:
                key = keys[lo]
                if key >= x:
                    if key == x:
                        policy_id: int = self_ids[lo]
                        if policy_id:
                            return policy_id
                    break
                lo += 1
        start = dot + 1
        dot = name.find(b".", start)
        while dot >= 0:  # stops before the bare TLD: entries have two labels at least
            x = h(name[start:])
            if bit_filter[x >> filter_shift] >> (x & 7) & 1:
                bucket = x >> dir_shift
                lo = directory[bucket]
                hi = directory[bucket + 1]
                while lo < hi:
                    key = keys[lo]
                    if key >= x:
                        if key == x:
                            policy_id = below_ids[lo]
                            if policy_id:
                                return policy_id
                        break
                    lo += 1
            start = dot + 1
            dot = name.find(b".", start)
        return 0

    return match_policy_id


def _make_group_matcher(
    bit_filter: memoryview,
    filter_shift: int,
    directory: memoryview,
    dir_shift: int,
    keys: memoryview,
    self_policy_ids: memoryview,
    below_policy_ids: memoryview,
    shadow_slots: memoryview,
    shadow_offsets: memoryview,
    shadow_pids: memoryview,
) -> Callable[[bytes, bytes], int]:
    """A client group's lookup: name, allowed -> the most specific policy id `p` with
    `allowed[p]` nonzero (0 = none). An entry of a list the group does not take is passed over
    as if it were absent, so the walk goes on to the parent names: no index copy per group.

    Shadowed entries: the main columns keep one policy per name and kind, the winner by
    precedence (resolver/compile.py). The entries it beat at the same name and kind are in a side
    table (`shadow_slots`: the sorted key slots that have any; for the i-th, self entries at
    `shadow_pids[shadow_offsets[2i]:shadow_offsets[2i+1]]`, below entries in the next run, each in
    precedence order). When the winner is outside the group, the first entry of the run the group
    takes is its answer at that name, before any parent name. The table is read only then, so the
    default lookup (match_policy_id) and names whose winner the group takes cost nothing more.
    Slower than match_policy_id (a helper call per probe); the default group keeps it."""
    h = hash_name
    shadowed_count = len(shadow_slots)
    find = bisect.bisect_left

    def shadowed(slot: int, run: int, allowed: bytes) -> int:
        """The first entry the group takes among those shadowed at `slot` (run 0: self, 1:
        below), 0 when none."""
        i = find(shadow_slots, slot)
        if i < shadowed_count and shadow_slots[i] == slot:
            run += 2 * i
            for policy_id in shadow_pids[shadow_offsets[run] : shadow_offsets[run + 1]]:
                if allowed[policy_id]:
                    return int(policy_id)
        return 0

    def found(name: bytes, policy_ids: memoryview, run: int, allowed: bytes) -> int:
        """The group's policy id for one probe of one kind (0 = none)."""
        x = h(name)
        if not bit_filter[x >> filter_shift] >> (x & 7) & 1:
            return 0
        bucket = x >> dir_shift
        lo: int = directory[bucket]
        hi: int = directory[bucket + 1]
        while lo < hi:
            key = keys[lo]
            if key >= x:
                if key != x:
                    return 0
                policy_id: int = policy_ids[lo]
                if not policy_id or allowed[policy_id]:
                    return policy_id
                return shadowed(lo, run, allowed) if shadowed_count else 0
            lo += 1
        return 0

    def match_policy_id_in(name: bytes, allowed: bytes) -> int:
        dot = name.find(b".")
        if dot < 0:
            return 0
        policy_id = found(name, self_policy_ids, 0, allowed)
        if policy_id:
            return policy_id
        start = dot + 1
        dot = name.find(b".", start)
        while dot >= 0:  # stops before the bare TLD, as match_policy_id does
            policy_id = found(name[start:], below_policy_ids, 1, allowed)
            if policy_id:
                return policy_id
            start = dot + 1
            dot = name.find(b".", start)
        return 0

    return match_policy_id_in
