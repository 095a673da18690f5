"""The same list as the publishers ship it: one plain file, an .xz stream, a .7z archive (one
file, LZMA) and ten numbered parts (a glob). `index_bench.py --containers` compiles each in a
child process and prints compile time and peak RSS beside the plain file's.

The compressed copies and the parts are written once next to the list and reused. `level` is
the LZMA preset of both (6, xz's and 7-Zip's default, unless told); decompression, the part a
compile pays for, is about as fast at any preset.
"""

from __future__ import annotations

import lzma
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import libarchive

CONTAINERS = ("plain", "xz", "7z", "parts")
WRITE_BLOCK = 4 << 20


def _fresh(target: Path, source: Path) -> bool:
    return target.exists() and target.stat().st_mtime >= source.stat().st_mtime


def make_xz(list_path: Path, level: int) -> Path:
    target = list_path.with_name(f"{list_path.name}.{level}.xz")
    if not _fresh(target, list_path):
        tmp = target.with_suffix(".tmp")
        with list_path.open("rb") as src, lzma.open(tmp, "wb", preset=level) as out:
            while block := src.read(WRITE_BLOCK):
                out.write(block)
        tmp.replace(target)
    return target


def make_7z(list_path: Path, level: int) -> Path:
    target = list_path.with_suffix(f".{level}.7z")
    if not _fresh(target, list_path):
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        size = list_path.stat().st_size
        options = f"compression=lzma2,compression-level={level}"
        writer = libarchive.file_writer(str(tmp), "7zip", options=options)
        with writer as archive, list_path.open("rb") as src:
            archive.add_file_from_memory(
                list_path.name, size, iter(lambda: src.read(WRITE_BLOCK), b"")
            )
        tmp.replace(target)
    return target


def make_parts(list_path: Path, count: int) -> str:
    """`count` parts named `<stem>_part_001.txt` ... split on line boundaries; returns the glob."""
    stem = list_path.stem
    pattern = str(list_path.with_name(f"{stem}_part_*.txt"))
    first = list_path.with_name(f"{stem}_part_001.txt")
    last = list_path.with_name(f"{stem}_part_{count:03d}.txt")
    if _fresh(first, list_path) and _fresh(last, list_path):
        return pattern
    for old in list_path.parent.glob(f"{stem}_part_*.txt"):
        old.unlink()
    lines = list_path.read_bytes().splitlines(keepends=True)
    per_part = -(-len(lines) // count)
    for i in range(count):
        part = list_path.with_name(f"{stem}_part_{i + 1:03d}.txt")
        part.write_bytes(b"".join(lines[i * per_part : (i + 1) * per_part]))
    return pattern


def container_rows(
    list_path: Path,
    names: list[str],
    parts: int,
    repeat: int,
    compile_in_child: Callable[[Path, Path], dict[str, float]],
    level: int = 6,
) -> dict[str, dict[str, float]]:
    """Compile the list in each container `repeat` times; the median of each figure."""
    sources: dict[str, Path] = {}
    for name in names:
        if name == "plain":
            sources[name] = list_path
        elif name == "xz":
            sources[name] = make_xz(list_path, level)
        elif name == "7z":
            sources[name] = make_7z(list_path, level)
        elif name == "parts":
            sources[name] = Path(make_parts(list_path, parts))
        else:
            raise SystemExit(f"unknown container {name!r} (one of {', '.join(CONTAINERS)})")
    rows: dict[str, dict[str, float]] = {}
    for name, source in sources.items():
        index = list_path.with_name(f"{list_path.stem}-{name}.blkx")
        runs = []
        for attempt in range(repeat):
            runs.append(compile_in_child(source, index))
            print(
                f"{'':>19}({name} run {attempt + 1}: {runs[-1]['compile_seconds']:.2f} s, "
                f"{runs[-1]['peak_rss_mib']:.0f} MiB)",
                file=sys.stderr,
                flush=True,
            )
        row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        row["source_bytes"] = _source_bytes(source)
        rows[name] = row
        index.unlink(missing_ok=True)
    return rows


def _source_bytes(source: Path) -> float:
    if "*" in source.name:
        return float(sum(p.stat().st_size for p in source.parent.glob(source.name)))
    return float(source.stat().st_size)


def print_rows(rows: dict[str, dict[str, float]], size: int, parts: int, repeat: int) -> None:
    base = rows.get("plain")
    print(f"{'':>17}containers, {size:,} names (median of {repeat}):")
    for name, row in rows.items():
        label = f"{parts} parts" if name == "parts" else name
        versus = ""
        if base is not None and name != "plain":
            versus = (
                f"  ({row['compile_seconds'] / base['compile_seconds']:.2f}x time, "
                f"{row['peak_rss_mib'] - base['peak_rss_mib']:+.0f} MiB RSS vs plain)"
            )
        mismatch = ""
        if base is not None and row["entries"] != base["entries"]:
            mismatch = f"  ENTRIES DIFFER: {row['entries']:.0f} vs {base['entries']:.0f}"
        print(
            f"{'':>19}{label:<9} {row['source_bytes'] / 1e6:8.1f} MB: compile "
            f"{row['compile_seconds']:6.2f} s (process {row['wall_seconds']:6.2f} s), "
            f"peak RSS {row['peak_rss_mib']:5.0f} MiB{versus}{mismatch}"
        )
