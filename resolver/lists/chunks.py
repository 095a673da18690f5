"""Reading list files fast: whole chunks of lines checked in bulk, per-line work only for the
lines that need it.

A clean line (already a canonical name) is the common case in every real list. Instead of running
the normaliser on 6.7M lines, each chunk is lower-cased and scanned by one regular expression for
anything that could need normalising or rejecting; lines with no such match are canonical as they
stand and go straight to hashing. Only the matched lines take the per-line path. `fast_path` and
`normalise` must agree: tests check that every fast-path name normalises to itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from resolver.dns.constants import MAX_LABEL, MAX_NAME_TEXT

CHUNK_BYTES = 256 << 10  # measured: numpy temporaries stay in cache; 4 MiB chunks were 1.7x slower
_BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 64 << 10  # a longer "line" is junk (names are <= 253): cut it, reject it

# Bytes a canonical line may hold: [a-z0-9._-] and the newline that ends it.
_GOOD_BYTE = np.zeros(256, dtype=bool)
_GOOD_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789._-\n", dtype=np.uint8)] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[np.frombuffer(b"0123456789", dtype=np.uint8)] = True
_DOT, _NL, _HYPHEN, _UNDERSCORE = 0x2E, 0x0A, 0x2D, 0x5F


def read_chunks(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield (number of the chunk's first line, chunk) with every chunk ending on a line
    boundary (the last one may not), the BOM removed, and CRLF and lone CR turned into LF."""
    line_no = 1
    carry = b""
    first = True
    while True:
        block = stream.read(chunk_bytes)
        if first:
            first = False
            # Tiny chunk sizes (tests) may split the BOM: read until it can be recognised.
            while block and len(block) < len(_BOM) and _BOM.startswith(block):
                more = stream.read(len(_BOM) - len(block))
                if not more:
                    break
                block += more
            if block.startswith(_BOM):
                block = block[len(_BOM) :]
                if not block:
                    continue
        if not block:
            if carry:
                yield line_no, carry.replace(b"\r", b"\n")
            return
        data = carry + block
        if data.endswith(b"\r"):  # maybe half of a CRLF split across reads: decide next time
            carry, data = b"\r", data[:-1]
        else:
            carry = b""
        # CRLF (Windows) and lone CR (classic Mac, mangled downloads) both end a line.
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n")
        if cut == -1:
            if len(data) > MAX_LINE_BYTES:
                # No line break in sight: hand it on as one (invalid) line rather than keep
                # growing it, which would cost quadratic copying and unbounded memory.
                cut = len(data)
                data += b"\n"
            else:
                carry = data + carry
                continue
        chunk = data[: cut + 1]
        carry = data[cut + 1 :] + carry
        yield line_no, chunk
        line_no += chunk.count(b"\n")


def suspect_lines(chunk: bytes) -> np.ndarray:
    """Indices of the lines of a lower-cased, LF-terminated chunk that are not already canonical
    names: a byte outside [a-z0-9._-], an empty label (leading, trailing or double dot), a hyphen
    at either end of a label, a label over 63 or a line over 253 characters, no dot, an all-digit
    last label (IP literals) or an underscore in the last label. Blank lines are not suspects.

    Vectorised with numpy over the whole chunk: one regular expression doing the same work
    measured 2.1 s per million lines, this about 0.1 s."""
    arr = np.frombuffer(chunk, dtype=np.uint8)
    if arr.size == 0:
        return np.empty(0, dtype=np.int32)
    is_nl = arr == _NL
    is_dot = arr == _DOT
    is_sep = is_nl | is_dot
    prev_sep = np.empty_like(is_sep)  # the byte before is a separator, or this is the start
    prev_sep[0] = True
    prev_sep[1:] = is_sep[:-1]
    is_hyphen = arr == _HYPHEN
    prev_hyphen = np.zeros_like(is_hyphen)
    prev_hyphen[1:] = is_hyphen[:-1]
    prev_dot = np.zeros_like(is_dot)
    prev_dot[1:] = is_dot[:-1]
    bad = ~_GOOD_BYTE[arr]
    bad |= is_dot & prev_sep  # empty label: leading or double dot
    bad |= is_nl & prev_dot  # trailing dot
    bad |= is_hyphen & prev_sep  # label starts with a hyphen
    bad |= is_sep & prev_hyphen  # label ends with a hyphen

    seps = np.flatnonzero(is_sep)
    label_ends = seps
    label_starts = np.empty_like(seps)
    label_starts[0] = 0
    label_starts[1:] = seps[:-1] + 1
    bad[label_ends[(label_ends - label_starts) > MAX_LABEL]] = True

    newlines = np.flatnonzero(is_nl)
    line_starts = np.empty_like(newlines)
    line_starts[0] = 0
    line_starts[1:] = newlines[:-1] + 1
    line_lengths = newlines - line_starts
    bad_count = np.cumsum(bad, dtype=np.int32)
    before = np.where(line_starts > 0, bad_count[line_starts - 1], 0)
    line_bad = (bad_count[newlines] - before) > 0
    line_bad |= line_lengths > MAX_NAME_TEXT

    dot_count = np.cumsum(is_dot, dtype=np.int32)
    dots_before = np.where(line_starts > 0, dot_count[line_starts - 1], 0)
    no_dot = (dot_count[newlines] - dots_before) == 0
    line_bad |= no_dot & (line_lengths > 0)

    # The last label runs from the separator before each newline to the newline.
    sep_rank = np.searchsorted(seps, newlines)  # index of each newline within seps
    tld_start = np.where(sep_rank > 0, seps[np.maximum(sep_rank - 1, 0)] + 1, 0)
    non_digit = np.cumsum(~_DIGIT[arr], dtype=np.int32)
    non_digit_before = np.where(tld_start > 0, non_digit[np.maximum(tld_start - 1, 0)], 0)
    tld_non_digits = non_digit[newlines] - non_digit_before - 1  # minus the newline itself
    line_bad |= (tld_non_digits == 0) & (line_lengths > 0)
    if _UNDERSCORE in arr:
        under = np.cumsum(arr == _UNDERSCORE, dtype=np.int32)
        under_before = np.where(tld_start > 0, under[np.maximum(tld_start - 1, 0)], 0)
        line_bad |= (under[newlines] - under_before) > 0
    return np.flatnonzero(line_bad)


def split_clean(chunk: bytes) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Split an LF-terminated chunk into canonical names (fast path, lower-cased) and the
    (line offset, original line) pairs that need the per-line normaliser. Blank lines are
    dropped. The originals keep their case: IDN must be folded by UTS 46, not bytes.lower."""
    if chunk and not chunk.endswith(b"\n"):
        chunk += b"\n"
    lowered = chunk.lower()  # ASCII only, so offsets and line breaks are unchanged
    lines = lowered.split(b"\n")
    lines.pop()  # the empty string after the final newline
    bad = suspect_lines(lowered).tolist()
    if not bad:
        return [line for line in lines if line], []
    originals = chunk.split(b"\n")
    dirty = [(i, originals[i]) for i in bad]
    for i in bad:
        lines[i] = b""
    return [line for line in lines if line], dirty
