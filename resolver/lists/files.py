"""Opening a list's bytes the way its publisher ships them: compressed, archived or split.

A list `path` names one file or, with `*`, `?` or `[...]` in it, a glob whose matches are read as
one list, part after part, in natural order (`part_2` before `part_10`). Each part is read on
its own, so a part that does not end with a newline cannot join its last line to the next part's
first, and every rejected line is reported with its own part's file name.

Each file is recognised by its first bytes, not its name: a URL list's downloaded copy is always
called `<name>.list` whatever the server sent. gzip (RFC 1952, several members read in turn),
xz, bzip2 and Zstandard (RFC 8878, several frames read in turn) are decompressed as a stream;
a 7z archive must hold exactly one file, which is streamed out of it. Nothing is unpacked to
disk, so a 200 MB list costs no temporary space and no extra copy in memory.

This module is imported by the serving processes too (the staleness check stats a list's
parts): the decompressors and the archive reader are imported when a file needs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

GLOB_CHARS = frozenset("*?[")
READ_BLOCK = 256 << 10

# Magic numbers: gzip RFC 1952 section 2.3.1; xz file format 1.0 section 2.1.1.1; Zstandard
# RFC 8878 section 3.1.1; 7z "7z\xbc\xaf\x27\x1c"; bzip2 "BZh" + block size digit, then the
# block magic (pi) or, for an empty stream, the end-of-stream magic (sqrt(pi)). The full bzip2
# test keeps a plain list whose first name starts with "BZh" from being taken for one.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
)
_BZIP2 = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
# Suffixes dropped from a file name before its list format is guessed (`zone.rpz.gz` is rpz).
_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".7z")
_NATURAL = re.compile(r"(\d+)")


class ListFileError(Exception):
    """A list file that cannot be read: no match for a glob, a corrupt or truncated compressed
    stream, an archive without exactly one file. The message names the file."""


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def is_glob(path: str) -> bool:
    return any(c in GLOB_CHARS for c in path)


def _natural_key(path: str) -> list[Any]:
    return [int(piece) if piece.isdigit() else piece for piece in _NATURAL.split(path)]


def list_parts(path: str) -> list[Path]:
    """The files of a list: the path itself, or a glob's regular files in natural order (empty
    when nothing matches)."""
    if not is_glob(path):
        return [Path(path)]
    matches = [m for m in glob.glob(path) if os.path.isfile(m)]
    return [Path(m) for m in sorted(matches, key=_natural_key)]


def list_exists(path: str) -> bool:
    parts = list_parts(path)
    return bool(parts) and all(p.is_file() for p in parts)


def list_signature(path: str) -> tuple[int, float] | None:
    """(total size, newest mtime) of a list's files, as the index header records them; None when
    a file is missing. A part added, removed or rewritten changes one of the two."""
    try:
        parts = resolve_parts(path)
    except ListFileError:
        return None
    return parts.size, parts.mtime


def stat_key(path: str) -> tuple[object, ...] | None:
    """What tells that a list's files changed, for the reloader's watch: each part's inode, size
    and mtime, and the set of parts."""
    keys: list[object] = []
    for part in list_parts(path):
        try:
            stat = part.stat()
        except OSError:
            return None
        keys.append((str(part), stat.st_ino, stat.st_size, stat.st_mtime, stat.st_mtime_ns))
    return tuple(keys) if keys else None


def inner_name(path: Path) -> str:
    """The file name a list format is guessed from: compression suffixes dropped."""
    name = str(path)
    while name.lower().endswith(_SUFFIXES):
        name = name[: name.rfind(".")]
    return name


def compression_of(head: bytes) -> str | None:
    """The container the first bytes of a file announce, or None for plain text."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _BZIP2.match(head):
        return "bzip2"
    return None


class _Counting:
    """The raw file, counting the bytes taken from it (progress of a compressed read)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.consumed += len(block)
        return block

    def readinto(self, buffer: Any) -> int:
        count: int = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.consumed += count
        return count

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class _Blocks:
    """A read(n) interface over an iterator of byte blocks (the 7z member's)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += block
        if n < 0:
            n = len(self._buffer)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


class ListFile:
    """One part of a list opened for reading: `read(n)` gives the decompressed bytes, `peek(n)`
    the first bytes without consuming them (for format detection), `consumed` how far into the
    file on disk the reading is (for progress)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = inner_name(path)
        try:
            self._raw = path.open("rb")
        except OSError as exc:
            raise ListFileError(f"{path}: {exc.strerror or exc}") from exc
        self._counting = _Counting(self._raw)
        self._pending = b""
        self._closers: list[Callable[[], object]] = [self._raw.close]
        self._archive_bytes: Callable[[], int] | None = None
        # What a corrupt or truncated stream raises, besides OSError and EOFError.
        self._errors: tuple[type[BaseException], ...] = (OSError, EOFError)
        try:
            head = self._raw.read(16)
            self._raw.seek(0)
            self.compression = compression_of(head)
            self._inner: _Readable = self._open_inner()
        except BaseException:
            self.close()
            raise

    @property
    def consumed(self) -> int:
        if self._archive_bytes is not None:
            return self._archive_bytes()
        return self._counting.consumed

    def _open_inner(self) -> _Readable:
        kind = self.compression
        if kind is None:
            return self._counting
        # The decompressors only call read/readinto on it: typed as the file they expect.
        source = cast(BinaryIO, self._counting)
        if kind == "gzip":
            import gzip

            return gzip.GzipFile(fileobj=source, mode="rb")
        if kind == "xz":
            import lzma

            self._errors += (lzma.LZMAError,)
            return lzma.LZMAFile(source)
        if kind == "bzip2":
            import bz2

            return bz2.BZ2File(source)
        if kind == "zstd":
            import zstandard

            self._errors += (zstandard.ZstdError,)
            reader: _Readable = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=READ_BLOCK, read_across_frames=True, closefd=False
            )
            return reader
        return self._open_7z()

    def _open_7z(self) -> _Readable:
        try:
            import libarchive
        except (ImportError, OSError) as exc:  # the module, or the C library it loads
            raise ListFileError(f"{self.path}: 7z archives need libarchive: {exc}") from exc
        self._errors += (libarchive.ArchiveError,)
        context = libarchive.file_reader(str(self.path), format_name="7zip")
        archive = context.__enter__()
        self._closers.append(lambda: context.__exit__(None, None, None))
        self._archive_bytes = lambda: int(archive.bytes_read)
        return _Blocks(self._7z_member(iter(archive)))

    def _7z_member(self, entries: Iterator[Any]) -> Iterator[bytes]:
        """The blocks of the archive's one file; a second file is an error, not ignored."""
        found = False
        for entry in entries:
            if not entry.isfile:
                continue
            if found:
                raise ListFileError(
                    f"{self.path}: the archive holds more than one file ({entry.pathname!r} "
                    "too); a list archive must hold exactly one (use a glob for split lists)"
                )
            found = True
            self.name = inner_name(Path(entry.pathname))
            yield from entry.get_blocks(READ_BLOCK)
        if not found:
            raise ListFileError(f"{self.path}: the archive holds no file")

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            if n < 0:
                out, self._pending = self._pending + self._read(-1), b""
                return out
            out, self._pending = self._pending[:n], self._pending[n:]
            return out
        return self._read(n)

    def peek(self, n: int) -> bytes:
        """Up to `n` first bytes, left to be read again."""
        while len(self._pending) < n:
            block = self._read(n - len(self._pending))
            if not block:
                break
            self._pending += block
        return self._pending[:n]

    def _read(self, n: int) -> bytes:
        try:
            return self._inner.read(n)
        except ListFileError:
            raise
        except self._errors as exc:
            what = self.compression or "file"
            raise ListFileError(f"{self.path}: corrupt or truncated {what}: {exc}") from exc

    def close(self) -> None:
        for closer in reversed(self._closers):
            # Closing after a failure must not mask that failure.
            with contextlib.suppress(Exception):
                closer()
        self._closers = []

    def __enter__(self) -> ListFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Parts:
    """A list's files and their combined size, resolved once when a compile starts."""

    files: list[Path]
    sizes: list[int]
    size: int
    mtime: float


def resolve_parts(path: str) -> Parts:
    parts = list_parts(path)
    if not parts:
        raise ListFileError(f"{path}: no file matches")
    sizes, mtime = [], 0.0
    for part in parts:
        try:
            stat = part.stat()
        except OSError as exc:
            raise ListFileError(f"{part}: {exc.strerror or exc}") from exc
        sizes.append(stat.st_size)
        mtime = max(mtime, stat.st_mtime)
    return Parts(parts, sizes, sum(sizes), mtime)
