"""The chunk loop shared by the formats whose lines are configuration directives (dnsmasq,
Unbound): most lines have one fixed shape around one name, so a small byte-level test per line
pulls the name out, the names of a whole chunk are checked in bulk by `split_clean` (as plain
lists are), and only the lines that fail either go through the format's per-line parser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import BinaryIO

from resolver.lists.chunks import read_chunks, split_clean
from resolver.lists.model import Batch, ParseReport
from resolver.lists.plain import EntrySink

# (name inside the line, index of its (pid, match) in the caller's list), or None: slow path.
FastLine = Callable[[bytes], tuple[bytes, int] | None]
SlowLine = Callable[[bytes, int], None]


def parse_directives(
    stream: BinaryIO,
    report: ParseReport,
    sink: EntrySink,
    scopes: list[tuple[int, int]],
    fast: FastLine,
    slow: SlowLine,
) -> Iterator[Batch]:
    """Yield the batches of a directive list: `scopes[i]` is the (pid, match) of fast names of
    kind i; `slow(raw line, line number)` adds what the other lines hold to `sink`."""
    for first_line, chunk in read_chunks(stream):
        report.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        inner: list[list[bytes]] = [[] for _ in scopes]
        offsets: list[list[int]] = [[] for _ in scopes]
        slow_offsets: list[int] = []
        for offset, line in enumerate(lines):
            found = fast(line) if line else None
            if found is None:
                if line:
                    slow_offsets.append(offset)
                continue
            name, kind = found
            inner[kind].append(name)
            offsets[kind].append(offset)
        for kind, names in enumerate(inner):
            if not names:
                continue
            # One name per line, so line i of the joined block is names[i]; a name with junk in
            # it is simply dirty and its whole line takes the slow path.
            clean, dirty = split_clean(b"\n".join(names) + b"\n")
            if clean:
                report.entries += len(clean)
                pid, match = scopes[kind]
                yield Batch(clean, pid, match)
            slow_offsets.extend(offsets[kind][i] for i, _ in dirty)
        slow_offsets.sort()
        for offset in slow_offsets:
            slow(lines[offset], first_line + offset)
        yield from sink.drain()


def is_address(text: str, version: int | None = None) -> bool:
    """An IP address (of that version, when given): a directive's answer or target."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version
