"""The copy of a transferred zone on disk: written record by record, changed by a merge.

The copy is RFC 1035 section 5 master-file text that the RPZ parser (resolver/lists/rpz.py)
reads, one record a line, every name absolute, the SOA first (its owner tells the parser where
the apex is):

    rpz.example. 60 IN SOA ns.rpz.example. hostmaster.rpz.example. 7 3600 600 86400 60
    bad.example.rpz.example. 60 IN CNAME .

Nothing here holds the zone. `CopyWriter` writes a new copy into a temporary file beside the
old one and renames it over the old one only when asked to, after every check. `IxfrDiff` is the
net effect of an IXFR's steps (RFC 1995 section 4), record by record, so it costs memory by the
size of the difference; `merge` streams the old copy through it into a `CopyWriter`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from resolver.sources import fsync_dir

__all__ = ["CopyWriter", "DiffMismatch", "IxfrDiff", "copy_serial", "merge"]

# A difference with more changed records than this is not worth holding: AXFR instead, which
# streams (a few hundred bytes of memory per changed record are held until the merge).
MAX_DIFF_RECORDS = 200_000
HEAD_LINES = 64  # the SOA of a copy is among its first lines (the apex node comes first)
_FLUSH_LINES = 4096  # unchanged lines of the old copy are written in batches of this many
_SOA = dns.rdatatype.SOA


class DiffMismatch(Exception):
    """An IXFR that does not apply to the copy (or is too large to hold): take the zone by AXFR.
    A deletion of a record the copy lacks means the copy is not the version the primary thinks
    we have (RFC 1995 section 4 sends deletions of records that exist)."""


class CopyWriter:
    """A new copy in a temporary file beside `copy`; the old copy is untouched until `install`,
    and `discard` (or any failure before `install`) leaves it byte for byte as it was."""

    def __init__(self, copy: Path) -> None:
        copy.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{copy.name}.", suffix=".part", dir=copy.parent)
        self.copy = copy
        self.temp = Path(temp)
        self._out = os.fdopen(fd, "wb", buffering=1 << 20)
        os.fchmod(fd, 0o644)
        self._hash = hashlib.sha256()
        self.size = 0
        self.records = 0
        self._state = "open"  # open -> finished -> installed | discarded

    def write_rdataset(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        self.write(rdataset.to_text(name, relativize=False).encode() + b"\n", len(rdataset))

    def write(self, data: bytes, records: int) -> None:
        self._out.write(data)
        self._hash.update(data)
        self.size += len(data)
        self.records += records

    def finish(self) -> None:
        """Everything is written: flush it to the disk (the rename must not land first)."""
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._state = "finished"

    def install(self) -> tuple[int, str]:
        """Rename the finished copy over the old one; its size and SHA-256."""
        if self._state != "finished":
            raise RuntimeError(f"{self.temp}: install before finish")
        os.replace(self.temp, self.copy)
        self._state = "installed"
        fsync_dir(self.copy.parent)
        return self.size, self._hash.hexdigest()

    def discard(self) -> None:
        if self._state == "installed":
            return
        self._state = "discarded"
        with contextlib.suppress(OSError):
            self._out.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


def copy_serial(copy: Path, origin: dns.name.Name) -> int | None:
    """The serial of the copy's SOA (None: no copy, or not one this module can merge into)."""
    try:
        with copy.open("rb") as text:
            for _, line in zip(range(HEAD_LINES), text, strict=False):
                fields = line.split()
                if len(fields) >= 7 and fields[3].upper() == b"SOA":
                    if dns.name.from_text(fields[0].decode()) != origin:
                        return None
                    return int(fields[6])
    except (OSError, ValueError, dns.exception.DNSException):
        return None
    return None


@dataclass(slots=True)
class _Change:
    in_copy: bool  # the first step that touched it deleted it: the copy must have it
    present: bool  # after the last step
    ttl: int


_Key = tuple[dns.name.Name, dns.rdata.Rdata]  # dnspython compares both canonically


class IxfrDiff:
    """What an IXFR changes, applied step by step as RFC 1995 section 4 orders it (each step's
    deletions, then its additions): a record deleted and re-added later is kept (with the new
    TTL), one added and deleted later is gone, and deleting what is already gone is a mismatch.
    The SOA is not a change: the final one replaces the copy's."""

    def __init__(self, origin: dns.name.Name, limit: int = MAX_DIFF_RECORDS) -> None:
        self.origin = origin
        self.limit = limit
        self.changes: dict[_Key, _Change] = {}
        self.soa: dns.rdataset.Rdataset | None = None

    def delete(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        for rdata in rdataset:
            key = (name, rdata)
            change = self.changes.get(key)
            if change is None:
                self._new(key, _Change(in_copy=True, present=False, ttl=rdataset.ttl))
            elif not change.present:
                raise DiffMismatch(f"the IXFR deletes {_show(name, rdata)} twice")
            else:
                change.present = False

    def add(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        for rdata in rdataset:
            key = (name, rdata)
            change = self.changes.get(key)
            if change is None:
                self._new(key, _Change(in_copy=False, present=True, ttl=rdataset.ttl))
            else:
                change.present, change.ttl = True, rdataset.ttl

    def _new(self, key: _Key, change: _Change) -> None:
        if len(self.changes) >= self.limit:
            raise DiffMismatch(f"the IXFR changes more than {self.limit:,} records")
        self.changes[key] = change


def merge(copy: Path, diff: IxfrDiff, serial: int, out: CopyWriter) -> None:
    """Write into `out` the copy at `serial` with `diff` applied: the new SOA, the copy's records
    in their order less the deleted ones, then the added ones. Raises DiffMismatch when the copy
    is not at `serial` or lacks a record the IXFR deletes (then nothing of `out` is kept)."""
    if diff.soa is None:
        raise DiffMismatch("the IXFR has no final SOA")
    out.write_rdataset(diff.origin, diff.soa)
    apex = _owner_key(diff.origin)
    owners = {_owner_key(name) for name, _ in diff.changes} | {apex}
    seen: set[_Key] = set()
    found_serial: int | None = None
    batch: list[bytes] = []
    with copy.open("rb") as old:
        for line_no, line in enumerate(old, 1):
            if line[: line.find(b" ")].lower() not in owners:
                batch.append(line)
                if len(batch) >= _FLUSH_LINES:
                    out.write(b"".join(batch), len(batch))
                    batch.clear()
                continue
            name, rdata = _parse(copy, line_no, line)
            if rdata.rdtype == _SOA and name == diff.origin:
                found_serial = int(rdata.serial)
                continue
            change = diff.changes.get((name, rdata))
            if change is None:
                batch.append(line)
            elif (name, rdata) not in seen:
                seen.add((name, rdata))
                if change.present:
                    batch.append(_line(name, change.ttl, rdata))
    if found_serial != serial:
        raise DiffMismatch(f"{copy} is at serial {found_serial}, the IXFR starts from {serial}")
    for (name, rdata), change in diff.changes.items():
        if change.in_copy and (name, rdata) not in seen:
            raise DiffMismatch(f"the IXFR deletes {_show(name, rdata)}, which {copy} lacks")
        if change.present and (name, rdata) not in seen:
            batch.append(_line(name, change.ttl, rdata))
    out.write(b"".join(batch), len(batch))


def _owner_key(name: dns.name.Name) -> bytes:
    return name.to_text().lower().encode()


def _line(name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> bytes:
    rdataset = dns.rdataset.from_rdata(ttl, rdata)
    return rdataset.to_text(name, relativize=False).encode() + b"\n"


def _parse(copy: Path, line_no: int, line: bytes) -> tuple[dns.name.Name, Any]:
    """One record line of a copy (owner TTL class type rdata, names absolute)."""
    try:
        owner, _ttl, rdclass, rdtype, text = line.decode().split(None, 4)
        rdata = dns.rdata.from_text(
            dns.rdataclass.from_text(rdclass), dns.rdatatype.from_text(rdtype), text.strip()
        )
        return dns.name.from_text(owner), rdata
    except (ValueError, UnicodeDecodeError, dns.exception.DNSException) as exc:
        raise DiffMismatch(f"{copy} line {line_no} is not a record: {exc}") from exc


def _show(name: dns.name.Name, rdata: dns.rdata.Rdata) -> str:
    return f"{name} {dns.rdatatype.to_text(rdata.rdtype)} {rdata.to_text()}"
