"""Compressed, archived and split lists: read as one stream, reported per part, refused when
broken."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from pathlib import Path

import libarchive
import pytest
import zstandard

from resolver.compile import CompileError, compile_lists
from resolver.lists.files import (
    ListFile,
    compression_of,
    inner_name,
    list_exists,
    list_parts,
    list_signature,
)
from resolver.lists.model import ListSpec
from resolver.provenance import header_is_current

# A TRUST+ Positif-style head: BOM, CRLF, a comment, upper case, a bad line.
LIST = (
    "\ufeff# domains_isp\r\n"
    "judi-contoh.example\r\n"
    "SLOT-GACOR88.example\r\n"
    "\r\n"
    "pinjol-cepat.example.com\r\n"
    "bad!name.example\r\n"
).encode()
NAMES = {b"judi-contoh.example", b"slot-gacor88.example", b"pinjol-cepat.example.com"}


def _zstd(data: bytes) -> bytes:
    # Two frames, as `zstd` writes for concatenated inputs: both must be read.
    c = zstandard.ZstdCompressor()
    half = len(data) // 2
    return c.compress(data[:half]) + c.compress(data[half:])


def _write_7z(path: Path, members: dict[str, bytes]) -> None:
    with libarchive.file_writer(str(path), "7zip") as archive:
        for name, data in members.items():
            archive.add_file_from_memory(name, len(data), data)


COMPRESSORS = {
    "gz": lambda d: gzip.compress(d[:40]) + gzip.compress(d[40:]),  # two members
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": _zstd,
}


def _names(specs: list[ListSpec]) -> tuple[set[bytes], object]:
    from resolver.compile import collect_names

    named = collect_names(specs)
    return set(named.entries), named.lists[0].report


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_file_reads_like_the_plain_one(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"domains_isp.txt.{suffix}"
    path.write_bytes(COMPRESSORS[suffix](LIST))
    names, report = _names([ListSpec(name="l", path=str(path))])
    assert names == NAMES
    assert report.format == "plain"  # type: ignore[attr-defined]
    assert report.rejected == {"bad_character": 1}  # type: ignore[attr-defined]
    assert report.examples["bad_character"] == [  # type: ignore[attr-defined]
        f"{path}:6: bad!name.example"
    ]


def test_7z_single_member_streams_and_names_the_format(tmp_path: Path) -> None:
    path = tmp_path / "mirror.7z"
    hosts = b"# hosts\r\n0.0.0.0 judi-contoh.example\r\n0.0.0.0 slot-gacor88.example\r\n"
    _write_7z(path, {"lists/hosts.txt": hosts})
    names, report = _names([ListSpec(name="l", path=str(path))])
    assert names == {b"judi-contoh.example", b"slot-gacor88.example"}
    assert report.format == "hosts"  # type: ignore[attr-defined]


def test_7z_with_two_files_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.7z"
    _write_7z(path, {"a.txt": b"a.example\n", "b.txt": b"b.example\n"})
    with pytest.raises(CompileError, match="more than one file"):
        compile_lists([ListSpec(name="l", path=str(path))])


def test_truncated_stream_fails_the_compile_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt.xz"
    path.write_bytes(lzma.compress(LIST * 200)[:-40])
    with pytest.raises(CompileError, match=r"cut\.txt\.xz: corrupt or truncated xz"):
        compile_lists([ListSpec(name="l", path=str(path))])


def test_compression_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    # A URL list's copy is always `<name>.list`, whatever the server sent.
    path = tmp_path / "trustpositif.list"
    path.write_bytes(gzip.compress(LIST))
    with ListFile(path) as file:
        assert file.compression == "gzip"
        assert file.peek(3) == b"\xef\xbb\xbf"
        assert file.read() == LIST
        assert file.consumed == path.stat().st_size
    assert compression_of(b"BZhost.example\n") is None  # a plain name, not bzip2
    assert inner_name(Path("feeds/zone.rpz.gz")) == "feeds/zone.rpz"


def test_glob_parts_are_one_list_in_natural_order(tmp_path: Path) -> None:
    parts = {
        "domains_isp_1.txt": b"a1.example\nbad!.example\n",
        "domains_isp_2.txt.gz": gzip.compress(b"a2.example\r\nno-newline.example"),
        "domains_isp_10.txt": b"a10.example\nbad!.example\n",
    }
    for name, data in parts.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "domains_isp_3.txt.part").mkdir()  # not a file: ignored
    pattern = str(tmp_path / "domains_isp_*")
    assert [p.name for p in list_parts(pattern)] == [
        "domains_isp_1.txt",
        "domains_isp_2.txt.gz",
        "domains_isp_10.txt",
    ]
    spec = ListSpec(name="l", path=pattern)
    result = compile_lists([spec])
    report = result.lists[0].report
    assert report.parts == 3
    assert report.entries == 4
    assert report.lines == 6  # the part without a final newline does not merge its last line
    assert result.lists[0].unique == 4
    assert report.examples["bad_character"] == [
        f"{tmp_path / 'domains_isp_1.txt'}:2: bad!.example",
        f"{tmp_path / 'domains_isp_10.txt'}:2: bad!.example",
    ]
    assert result.lists[0].size == sum(p.stat().st_size for p in list_parts(pattern))
    header = {"sources": [r.to_json() for r in result.lists]}
    assert header_is_current(header, [spec])
    (tmp_path / "domains_isp_11.txt").write_bytes(b"a11.example\n")
    assert not header_is_current(header, [spec])  # a new part means a rebuild


def test_glob_without_match_is_missing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing_*.txt")
    assert not list_exists(pattern)
    assert list_signature(pattern) is None
    with pytest.raises(CompileError, match="no file matches"):
        compile_lists([ListSpec(name="l", path=pattern)])


def test_signature_of_one_file_is_its_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_bytes(LIST)
    stat = os.stat(path)
    assert list_signature(str(path)) == (stat.st_size, stat.st_mtime)
    assert list_exists(str(path))
