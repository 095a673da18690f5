"""One version of the served RPZ zone, on disk, and the difference between two versions.

A snapshot file holds the zone's records (SOA and NS aside) exactly as `blokir export --format
rpz` maps the merged policy (`resolver.export.rpz_records`), one record a line: `OWNER TYPE
DATA`, OWNER relative to the zone origin, the records of a listed name (`name`, `*.name`) together
and the names in order. Because both files of a version pair are
in the same order, their difference is one streaming merge: memory stays flat whatever the
size, and a transfer reads a file rather than a dict of every name.

A second child (`mode = "wire"`), started once the version is served and announced, packs the
snapshot into ready message bodies (resolver/xfr/zonewire.py), so an AXFR only reads and sends
blocks: the per-record work is done once per version, not per transfer, and not before the
IXFR that carries a change can go out.

Mode "step" builds only the difference from the lists that changed (resolver/xfr/incremental.py;
it falls back to a full build when it cannot), and mode "merge" writes a version's snapshot
afterwards from the previous one and that difference.

Building a snapshot needs every name in memory (`collect_names`), so it runs in a child process
(`python -m resolver.xfr.snapshot`, a JSON request on stdin, a JSON result on stdout), like the
index build: the supervisor that serves transfers never grows by the size of the policy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from resolver.export import rpz_records
from resolver.lists.model import ListSpec
from resolver.provenance import spec_from_json, spec_json
from resolver.xfr import incremental
from resolver.xfr.zonewire import ZoneWire, write_blocks

_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class Request:
    """What the child builds: the zone for `specs` into `output`, and, when `previous` is set,
    the records deleted and added since it (RFC 1995 order: deletions, then additions)."""

    specs: list[ListSpec]
    landing_ipv4: str | None
    landing_ipv6: str | None
    ttl: int
    zone: str
    output: Path
    previous: Path | None = None
    deleted: Path | None = None
    added: Path | None = None
    wire: Path | None = None  # mode "wire": `output` packed as message bodies, written here
    mode: str = "zone"  # or "step" (from the changed lists), "merge", "wire"
    store: Path | None = None  # the lists of `previous` (resolver/xfr/incremental.py)
    store_out: Path | None = None  # where the lists of this version are written

    def to_json(self) -> dict[str, Any]:
        return {
            "specs": [spec_json(s) for s in self.specs],
            "landing_ipv4": self.landing_ipv4,
            "landing_ipv6": self.landing_ipv6,
            "ttl": self.ttl,
            "zone": self.zone,
            "output": str(self.output),
            "previous": str(self.previous) if self.previous else None,
            "deleted": str(self.deleted) if self.deleted else None,
            "added": str(self.added) if self.added else None,
            "wire": str(self.wire) if self.wire else None,
            "mode": self.mode,
            "store": str(self.store) if self.store else None,
            "store_out": str(self.store_out) if self.store_out else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        def path(key: str) -> Path | None:
            return Path(data[key]) if data.get(key) else None

        return cls(
            specs=[spec_from_json(s) for s in data["specs"]],
            landing_ipv4=data["landing_ipv4"],
            landing_ipv6=data["landing_ipv6"],
            ttl=int(data["ttl"]),
            zone=str(data["zone"]),
            output=Path(data["output"]),
            previous=path("previous"),
            deleted=path("deleted"),
            added=path("added"),
            wire=path("wire"),
            mode=str(data.get("mode", "zone")),
            store=path("store"),
            store_out=path("store_out"),
        )


@dataclass(frozen=True, slots=True)
class Built:
    sha256: str  # of the record lines: equal digests mean the same zone content
    records: int
    deleted: int = 0
    added: int = 0
    incremental: bool = False  # only the difference was written, not `output`


def build(request: Request) -> Built:
    """Write the snapshot (and the difference, if asked), or in mode "wire" the block file of
    an existing snapshot; the caller renames the files into place."""
    if request.mode == "wire":
        if request.wire is None:
            raise ValueError("mode wire needs a wire path")
        encoder = ZoneWire(request.zone, request.ttl)
        with open(request.wire, "wb", buffering=_BUFFER) as blocks:
            write_blocks(encoder.records(read_records(request.output)), blocks)
        return Built("", 0)
    if request.mode == "merge":  # `output`: the snapshot `previous` with one step applied
        return _merge(request)
    settings = incremental.settings_of(
        request.ttl, request.landing_ipv4, request.landing_ipv6, request.zone
    )
    if request.mode == "step" and request.store and request.store_out:
        step = incremental.build_step(request.specs, settings, request.store, request.store_out)
        if step is not None and request.deleted and request.added:
            return _write_step(step, request.deleted, request.added)
        shutil.rmtree(request.store_out, ignore_errors=True)  # a full build after all
    if request.store_out is not None:
        named = incremental.build_full(request.specs, settings, request.store_out)
    else:
        from resolver.compile import collect_names  # numpy: only in this child process

        named = collect_names(request.specs)
    _, by_name = rpz_records(
        named,
        landing_ipv4=request.landing_ipv4,
        landing_ipv6=request.landing_ipv6,
        ttl=request.ttl,
        zone=request.zone,
    )
    digest = hashlib.sha256(f"ttl {request.ttl}\n".encode())  # the TTL is the zone's too
    records = 0
    batch: list[str] = []
    with open(request.output, "w", encoding="ascii", buffering=_BUFFER) as out:
        for _, lines in by_name:
            batch.extend(lines)
            if len(batch) >= 10_000:
                records += _write(out, digest, batch)
                batch = []
        records += _write(out, digest, batch)
    del named
    deleted = added = 0
    if request.previous is not None and request.deleted and request.added:
        deleted, added = diff(request.previous, request.output, request.deleted, request.added)
    return Built(digest.hexdigest(), records, deleted, added)


def _write_step(step: incremental.Step, deleted: Path, added: Path) -> Built:
    """The difference files of an incremental build; the digest is that of the difference
    (the parent chains it to the previous version's: equal content, equal chain)."""
    digest = hashlib.sha256()
    for path, records in ((deleted, step.deleted), (added, step.added)):
        text = "".join(f"{r}\n" for r in records)
        digest.update(text.encode("ascii") + b"\0")
        path.write_text(text, encoding="ascii")
    return Built(digest.hexdigest(), 0, len(step.deleted), len(step.added), incremental=True)


def _merge(request: Request) -> Built:
    """Write `output`: the snapshot `previous` with the step `deleted`/`added` applied."""
    if not (request.previous and request.deleted and request.added):
        raise ValueError("mode merge needs previous, deleted and added")
    records = 0
    with open(request.output, "w", encoding="ascii", buffering=_BUFFER) as out:
        for record in incremental.merged(
            read_records(request.previous),
            read_records(request.deleted),
            read_records(request.added),
        ):
            out.write(record + "\n")
            records += 1
    return Built("", records)


def _write(out: TextIO, digest: Any, lines: list[str]) -> int:
    """Lines `owner TYPE data`, without the export's trailing `; inherited` comment."""
    text = "".join([line.split(" ;", 1)[0] + "\n" for line in lines])
    digest.update(text.encode("ascii"))
    out.write(text)
    return len(lines)


def _name(record: str) -> str:
    """The listed name a record belongs to: its owner without a leading `*.`."""
    owner = record[: record.index(" ")]
    return owner[2:] if owner.startswith("*.") else owner


def groups(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(name, records) per listed name, in file order."""
    name = ""
    records: list[str] = []
    for record in read_records(path):
        key = _name(record)
        if key != name and records:
            yield name, records
            records = []
        name = key
        records.append(record)
    if records:
        yield name, records


def diff(old: Path, new: Path, deleted: Path, added: Path) -> tuple[int, int]:
    """Records in `old` but not `new` into `deleted`, the reverse into `added` (one record a
    line); returns their counts. One merge of two name-ordered files: O(size), flat memory."""
    counts = [0, 0]
    with (
        open(deleted, "w", encoding="ascii", buffering=_BUFFER) as gone,
        open(added, "w", encoding="ascii", buffering=_BUFFER) as came,
    ):

        def emit(out: TextIO, which: int, items: list[str]) -> None:
            out.writelines(f"{r}\n" for r in items)
            counts[which] += len(items)

        before, after = groups(old), groups(new)
        a, b = next(before, None), next(after, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                assert a is not None
                emit(gone, 0, a[1])
                a = next(before, None)
            elif a is None or b[0] < a[0]:
                emit(came, 1, b[1])
                b = next(after, None)
            else:
                if a[1] != b[1]:
                    kept = set(b[1])
                    emit(gone, 0, [r for r in a[1] if r not in kept])
                    kept = set(a[1])
                    emit(came, 1, [r for r in b[1] if r not in kept])
                a, b = next(before, None), next(after, None)
    return counts[0], counts[1]


def read_records(path: Path) -> Iterator[str]:
    """The records of a snapshot or difference file, streamed."""
    with open(path, encoding="ascii", buffering=_BUFFER) as lines:
        for line in lines:
            yield line.rstrip("\n")


def main() -> int:
    request = Request.from_json(json.load(sys.stdin))
    try:
        built = build(request)
    except Exception as exc:  # reported to the parent, which keeps the previous version
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    result = {"ok": True, "sha256": built.sha256, "records": built.records}
    result.update(deleted=built.deleted, added=built.added, incremental=built.incremental)
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # skip freeing the name dict: the process ends anyway


if __name__ == "__main__":
    sys.exit(main())
