"""Where a key is written in a TOML file, and the error that says so.

Every configuration problem is one `ConfigError` a person can act on, in the form
`<file>:<line> <key path>: <why>`, for example

    blokir.toml:12 lists[2].action: 'nxdomian' is not one of landing, nxdomain, nodata, refused

`tomllib` gives no line numbers for values, so `Locator` scans the TOML text once (table headers,
arrays of tables with their index, `key = ` lines, dotted keys, array elements, inline tables) and
maps a key path such as `lists[2].action` to its line. A key that is missing points at the header
of the table it belongs in. Array indices in key paths count from 0, in document order.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import tomllib
from collections.abc import Sequence

__all__ = ["ConfigError", "KeyPath", "Locator", "format_key_path"]

KeyPath = tuple[str | int, ...]

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_RE = re.compile(r"[^,\]}#\r\n]+")  # numbers, booleans, dates: up to a delimiter


class ConfigError(Exception):
    """A configuration problem; `str()` is the whole message, `<file>:<line> <key>: <why>`.

    `file`, `line` and `key` are also kept apart (any may be None) for callers that want them."""

    def __init__(
        self,
        why: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.why = why
        self.file = file
        self.line = line
        self.key = key
        where = file or ""
        if file and line is not None:
            where = f"{file}:{line}"
        if key:
            where = f"{where} {key}" if where else key
        super().__init__(f"{where}: {why}" if where else why)


def format_key_path(path: Sequence[str | int]) -> str:
    """`("lists", 2, "action")` -> `lists[2].action`; keys that are not bare are quoted."""
    out = ""

    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part)
            out += f".{text}" if out else text
    return out


# --------------------------------------------------------------------------------------------
# Line locator


class _StopScan(Exception):
    pass


class Locator:
    """Maps key paths to the line they are written on by scanning the TOML text.

    Only run on text tomllib has accepted, so it can be lenient; if it still gets confused it
    stops and keeps what it found (errors then point at the nearest known parent)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        self._text = text
        self._pos = 0
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._aot_index: dict[KeyPath, int] = {}
        with contextlib.suppress(_StopScan, IndexError, tomllib.TOMLDecodeError):
            self._scan()

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of `path`, or of its nearest ancestor that is written down."""
        key = tuple(path)
        while key:
            line = self.lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return None

    # -- scanning --------------------------------------------------------------------------

    def _line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _record(self, path: KeyPath, pos: int) -> None:
        line = self._line_at(pos)
        for k in range(1, len(path) + 1):
            self.lines.setdefault(path[:k], line)

    def _peek(self, n: int = 1) -> str:
        return self._text[self._pos : self._pos + n]

    def _skip_blanks(self) -> None:
        text, n = self._text, len(self._text)
        while self._pos < n and text[self._pos] in " \t":
            self._pos += 1

    def _skip_blanks_lines_comments(self) -> None:
        text, n = self._text, len(self._text)
        while self._pos < n:
            c = text[self._pos]
            if c in " \t\r\n":
                self._pos += 1
            elif c == "#":
                self._skip_to_eol()
            else:
                break

    def _skip_to_eol(self) -> None:
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end

    def _scan(self) -> None:
        text, n = self._text, len(self._text)
        table: KeyPath = ()
        while self._pos < n:
            self._skip_blanks()
            if self._pos >= n:
                break
            c = text[self._pos]
            if c in "\r\n":
                self._pos += 1
            elif c == "#":
                self._skip_to_eol()
            elif c == "[":
                start = self._pos
                is_aot = self._peek(2) == "[["
                self._pos += 2 if is_aot else 1
                keys = self._key()
                self._skip_blanks()
                self._pos += 2 if is_aot else 1
                if is_aot:
                    array = (*self._resolve(keys[:-1]), keys[-1])
                    index = self._aot_index.get(array, -1) + 1
                    self._aot_index[array] = index
                    table = (*array, index)
                else:
                    table = self._resolve(keys)
                self._record(table, start)
            else:
                start = self._pos
                keys = self._key()
                self._skip_blanks()
                if self._peek() != "=":
                    raise _StopScan
                self._pos += 1
                self._skip_blanks()
                path = table + tuple(keys)
                self._record(path, start)
                self._value(path)

    def _resolve(self, keys: Sequence[str]) -> KeyPath:
        """A header's key path, with the current index inserted after each array of tables."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self._aot_index:
                path = (*path, self._aot_index[path])
        return path

    def _key(self) -> list[str]:
        text = self._text
        keys: list[str] = []
        while True:
            self._skip_blanks()
            c = self._peek()
            if c in ('"', "'"):
                start = self._pos
                self._string_single(c)
                raw = text[start : self._pos]
                keys.append(str(tomllib.loads(f"k = {raw}")["k"]))
            else:
                match = _BARE_KEY_RE.match(text, self._pos)
                if match is None:
                    raise _StopScan
                keys.append(match.group())
                self._pos = match.end()
            self._skip_blanks()
            if self._peek() != ".":
                return keys
            self._pos += 1

    def _value(self, path: KeyPath) -> None:
        text = self._text
        c = self._peek()
        if c == "[":
            self._pos += 1
            index = 0
            while True:
                self._skip_blanks_lines_comments()
                if self._peek() == "]":
                    self._pos += 1
                    return
                before = self._pos
                element = (*path, index)
                self._record(element, self._pos)
                self._value(element)
                self._skip_blanks_lines_comments()
                if self._peek() == ",":
                    self._pos += 1
                elif self._peek() != "]" or self._pos == before:
                    raise _StopScan
                index += 1
        elif c == "{":
            self._pos += 1
            while True:
                self._skip_blanks_lines_comments()
                if self._peek() == "}":
                    self._pos += 1
                    return
                start = self._pos
                sub = (*path, *self._key())
                self._skip_blanks()
                if self._peek() != "=":
                    raise _StopScan
                self._pos += 1
                self._skip_blanks()
                self._record(sub, start)
                self._value(sub)
                self._skip_blanks_lines_comments()
                if self._peek() == ",":
                    self._pos += 1
                elif self._peek() != "}":
                    raise _StopScan
        elif self._peek(3) in ('"""', "'''"):
            quote = self._peek(3)
            self._pos += 3
            while True:
                end = text.find(quote, self._pos)
                if end < 0:
                    raise _StopScan
                if quote == '"""':
                    # A quote run preceded by an odd number of backslashes is escaped.
                    slashes = 0
                    while text[end - 1 - slashes] == "\\":
                        slashes += 1
                    if slashes % 2:
                        self._pos = end + 1
                        continue
                self._pos = end + 3
                # Up to two more quotes belong to the content (`"""a""""`).
                extra = 0
                while extra < 2 and self._peek() == quote[0]:
                    self._pos += 1
                    extra += 1
                return
        elif c in ('"', "'"):
            self._string_single(c)
        else:
            match = _SCALAR_RE.match(text, self._pos)
            if match is None:
                raise _StopScan
            self._pos = match.end()

    def _string_single(self, quote: str) -> None:
        text, n = self._text, len(self._text)
        self._pos += 1
        while self._pos < n:
            c = text[self._pos]
            if c == "\\" and quote == '"':
                self._pos += 2
                continue
            self._pos += 1
            if c == quote:
                return
            if c == "\n":
                break
        raise _StopScan
