"""chunks.py: chunked reading (BOM, CRLF, line numbers) and the bulk fast-path classifier."""

from __future__ import annotations

import io

import pytest

from resolver.lists.chunks import read_chunks, split_clean

DATA = b"\xef\xbb\xbfa.com\r\nb.com\nc.com"


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 7, 100, 1 << 20])
def test_read_chunks_any_size(chunk_bytes: int) -> None:
    chunks = list(read_chunks(io.BytesIO(DATA), chunk_bytes))
    assert b"".join(c for _, c in chunks) == b"a.com\nb.com\nc.com"
    # Each chunk's first line number is right whatever the chunking.
    for first_line, chunk in chunks:
        assert chunk.split(b"\n")[0] == [b"a.com", b"b.com", b"c.com"][first_line - 1]


def test_split_clean_classifies_each_quirk() -> None:
    lines = [
        b"good.example.com",
        b"",
        b"UPPER.com",
        b".lead.com",
        b"trail.com.",
        b"a..b.com",
        b"-h.com",
        b"h-.com",
        b"a.-b.com",
        b"x" * 64 + b".com",
        b"nodot",
        b"1.2.3.4",
        b"sub.exa_mple.com",
        b"ex.co_m",
        b"ok_label.com",
        b"space .com",
        b"ab.c1",
        b"12.34",
        b"xn--bcher-kva.example",
        ("b\u00fccher.example").encode(),
    ]
    clean, dirty = split_clean(b"\n".join(lines) + b"\n")
    assert clean == [
        b"good.example.com",
        b"upper.com",
        b"sub.exa_mple.com",
        b"ok_label.com",
        b"ab.c1",
        b"xn--bcher-kva.example",
    ]
    assert [i for i, _ in dirty] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19]
    # Dirty lines come back as written (case intact) for the normaliser.
    assert dirty[-1][1] == ("b\u00fccher.example").encode()


def test_long_name_is_dirty() -> None:
    name = b".".join([b"a" * 63] * 4)  # 255 characters: over 253
    clean, dirty = split_clean(name + b"\n")
    assert clean == [] and dirty == [(0, name)]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 5, 1 << 20])
def test_lone_cr_and_crlf_end_lines(chunk_bytes: int) -> None:
    data = b"judi-a.example\rjudi-b.example\r\njudi-c.example\r"
    joined = b"".join(c for _, c in read_chunks(io.BytesIO(data), chunk_bytes))
    assert joined.split(b"\n")[:3] == [b"judi-a.example", b"judi-b.example", b"judi-c.example"]
    assert joined.count(b"\n") == 3


def test_a_line_without_end_is_cut_not_grown_forever() -> None:
    data = b"x" * (200 << 10)
    chunks = list(read_chunks(io.BytesIO(data), 4096))
    assert sum(len(c) for _, c in chunks) >= len(data)
    assert all(len(c) <= (64 << 10) + 4096 + 1 for _, c in chunks)
