"""The zone's versions on disk: the serial, the current snapshot and the last differences.

Layout, in `<state_dir>/rpz/`: `state.json` (serial, content digest, the steps kept),
`zone-<serial>.txt` (the current snapshot, resolver/xfr/snapshot.py), `zone-<serial>.wire` (the
same records as message bodies for AXFR, once packed) and, per step kept,
`del-<serial>.txt` / `add-<serial>.txt` (what changed to reach that serial), and `lists/` (the
lists the current version was built from, resolver/xfr/incremental.py). A version built from
its step alone has no snapshot file at first: until it is written in the background, its
`base` (the previous snapshot) and its last step stand for it. The serial only
grows (RFC 1982 arithmetic) and survives restarts, so a secondary never sees it go backwards:
a reload that leaves the zone's content unchanged keeps the serial.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERIAL_BITS = 32
_MODULUS = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)


def serial_gt(a: int, b: int) -> bool:
    """`a` is greater than `b` in serial number arithmetic (RFC 1982 section 3.2)."""
    return a != b and (a - b) % _MODULUS < _HALF


def next_serial(current: int | None, now: float | None = None) -> int:
    """The next serial: the clock in seconds when that is ahead of `current` (so a lost state
    directory still most likely yields a greater serial), else `current` + 1 (RFC 1982 3.1)."""
    clock = int(time.time() if now is None else now) % _MODULUS
    if current is None:
        return clock
    step = (current + 1) % _MODULUS
    return clock if serial_gt(clock, step) else step


@dataclass(frozen=True, slots=True)
class Step:
    """What changed from `before` to `serial`: two record files (resolver/xfr/snapshot.py)."""

    before: int
    serial: int
    deleted: Path
    added: Path


@dataclass(slots=True)
class Version:
    serial: int
    sha256: str
    records: int
    snapshot: Path
    steps: list[Step] = field(default_factory=list)  # oldest first, ending at `serial`
    base: Path | None = None  # while `snapshot` is not written: the previous snapshot

    @property
    def pending(self) -> bool:
        """Whether the snapshot is still to be made from `base` and the last step."""
        return self.base is not None

    @property
    def wire(self) -> Path:
        return self.snapshot.with_suffix(".wire")


class ZoneHistory:
    """The current version and its steps; `commit` installs a new one atomically (state.json is
    written last, by rename: a crash leaves the old version or the new one, never a mix)."""

    def __init__(self, state_dir: Path, keep: int) -> None:
        self.directory = state_dir / "rpz"
        self.keep = keep
        self._lock = threading.Lock()
        self._scratch = itertools.count()
        self.current: Version | None = self._load()

    def scratch(self, name: str) -> Path:
        """A fresh temporary path here (unique per call: a build and a packing may overlap)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f".{name}.{os.getpid()}.{next(self._scratch)}.tmp"

    def _load(self) -> Version | None:
        try:
            data = json.loads((self.directory / "state.json").read_text())
            steps = [
                Step(
                    s["before"],
                    s["serial"],
                    self.directory / s["deleted"],
                    self.directory / s["added"],
                )
                for s in data.get("steps", [])
            ]
            version = Version(
                int(data["serial"]),
                str(data["sha256"]),
                int(data["records"]),
                self.directory / data["snapshot"],
                steps,
                self.directory / data["base"] if data.get("base") else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if version.base is not None:
            last = version.steps[-1] if version.steps else None
            usable = last is not None and last.serial == version.serial
            if not (usable and version.base.is_file()):
                return None
            if version.snapshot.is_file():  # written, the crash came before the state
                version.base = None
        elif not version.snapshot.is_file():
            return None
        # A step whose files are gone cannot be served; nor can any step before it.
        while version.steps and not all(
            s.deleted.is_file() and s.added.is_file() for s in version.steps
        ):
            version.steps.pop(0)
        return version

    @property
    def lists(self) -> Path:
        """The lists of the current version (resolver/xfr/incremental.py `Store`)."""
        return self.directory / "lists"

    def install_lists(self, lists: Path, version: Version) -> None:
        """Make `lists` (a directory in the scratch area) the lists `version` was built from."""
        (lists / "version").write_text(version.sha256)
        with self._lock:
            old = self.scratch("lists-old")
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.lists, old)
            os.replace(lists, self.lists)
        shutil.rmtree(old, ignore_errors=True)

    def lists_of(self, version: Version) -> Path | None:
        """The lists directory when it is `version`'s (a crash between a commit and the lists'
        installation leaves older ones, which must not be diffed against)."""
        try:
            return self.lists if (self.lists / "version").read_text() == version.sha256 else None
        except OSError:
            return None

    def commit(
        self,
        snapshot: Path | None,
        sha256: str,
        records: int,
        deleted: Path | None,
        added: Path | None,
    ) -> Version | None:
        """Adopt a new snapshot (files in the scratch area, moved here). Returns the new version,
        or None when the content is unchanged (the scratch files are removed). Without a
        snapshot (built from its step alone), the previous snapshot stays as the new version's
        `base` until `install_snapshot`."""
        with self._lock:
            old = self.current
            if old is not None and old.sha256 == sha256:
                for path in (snapshot, deleted, added):
                    if path is not None:
                        path.unlink(missing_ok=True)
                return None
            serial = next_serial(old.serial if old else None)
            target = self.directory / f"zone-{serial}.txt"
            base = None
            if snapshot is not None:
                os.replace(snapshot, target)
            elif old is None or old.pending or deleted is None or added is None or not self.keep:
                raise ValueError("a version without a snapshot needs a written previous one")
            else:
                base = old.snapshot
            steps = list(old.steps) if old else []
            if old is not None and deleted is not None and added is not None and self.keep > 0:
                step = Step(
                    old.serial,
                    serial,
                    self.directory / f"del-{serial}.txt",
                    self.directory / f"add-{serial}.txt",
                )
                os.replace(deleted, step.deleted)
                os.replace(added, step.added)
                steps.append(step)
            else:
                steps = []  # no difference known: history restarts here
                for path in (deleted, added):
                    if path is not None:
                        path.unlink(missing_ok=True)
            dropped = steps[: max(0, len(steps) - self.keep)]
            steps = steps[len(dropped) :]
            version = Version(serial, sha256, records, target, steps, base)
            self._save(version)
            self.current = version
        for step in dropped:
            step.deleted.unlink(missing_ok=True)
            step.added.unlink(missing_ok=True)
        if old is not None and old.snapshot != target:
            # A transfer still reading the old file keeps its open descriptor (POSIX unlink).
            if base is None:
                old.snapshot.unlink(missing_ok=True)
            if old.base is not None:
                old.base.unlink(missing_ok=True)
            old.wire.unlink(missing_ok=True)
        return version

    def install_snapshot(self, version: Version, snapshot: Path, records: int) -> bool:
        """Put the written snapshot of a pending `version` in place (its base is then dropped),
        if it is still the current version."""
        with self._lock:
            if self.current is not version or version.base is None:
                snapshot.unlink(missing_ok=True)
                return False
            os.replace(snapshot, version.snapshot)
            base, version.base = version.base, None
            version.records = records
            self._save(version)
        base.unlink(missing_ok=True)
        return True

    def install_wire(self, version: Version, wire: Path) -> bool:
        """Put a packed block file in place for `version`, if it is still the current one."""
        with self._lock:
            if self.current is version:
                os.replace(wire, version.wire)
                return True
        wire.unlink(missing_ok=True)
        return False

    def _save(self, version: Version) -> None:
        data: dict[str, Any] = {
            "serial": version.serial,
            "sha256": version.sha256,
            "records": version.records,
            "snapshot": version.snapshot.name,
            "base": version.base.name if version.base else None,
            "steps": [
                {
                    "before": s.before,
                    "serial": s.serial,
                    "deleted": s.deleted.name,
                    "added": s.added.name,
                }
                for s in version.steps
            ],
        }
        temporary = self.scratch("state")
        temporary.write_text(json.dumps(data, indent=1))
        os.replace(temporary, self.directory / "state.json")

    def steps_since(self, serial: int) -> list[Step] | None:
        """The steps from `serial` to the current one, oldest first; [] when `serial` is
        current; None when the history does not reach back that far (answer with AXFR)."""
        version = self.current
        if version is None:
            return None
        if serial == version.serial:
            return []
        for i, step in enumerate(version.steps):
            if step.before == serial:
                return list(version.steps[i:])
        return None

    def clean(self) -> None:
        """Remove files no version refers to (left by a crash)."""
        version = self.current
        keep = {"state.json", self.lists.name}
        if version is not None:
            keep.update((version.snapshot.name, version.wire.name))
            if version.base is not None:
                keep.add(version.base.name)
            for step in version.steps:
                keep.update((step.deleted.name, step.added.name))
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                if path.name in keep or path.suffix not in (".txt", ".wire", ".tmp"):
                    continue
                if path.is_dir():  # a Store a crashed build was writing
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
