"""List parsers, one per format, behind one entry point: `parse_list`.

Every parser has the same shape: it reads a binary stream, interns the policies its entries need
in the shared `PolicyTable`, yields `Batch`es of normalised names, and fills a `ParseReport`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

from resolver.lists.adblock import parse_adblock
from resolver.lists.detect import detect_format
from resolver.lists.hosts import parse_hosts
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.plain import parse_plain
from resolver.lists.rpz import parse_rpz
from resolver.policy import PolicyTable

Parser = Callable[[BinaryIO, ListSpec, PolicyTable, ParseReport], Iterator[Batch]]

PARSERS: dict[str, Parser] = {
    "plain": parse_plain,
    "hosts": parse_hosts,
    "adblock": parse_adblock,
    "rpz": parse_rpz,
}
FORMATS = ("auto", *PARSERS)


def parse_list(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    """Parse one list in its configured format, or the detected one when `format = "auto"`.
    The stream must be seekable when detecting (detection peeks at the head and rewinds)."""
    fmt = spec.format
    if fmt == "auto":
        head = stream.read(64 << 10)
        stream.seek(0)
        fmt = detect_format(head, spec.path)
    report.format = fmt
    return PARSERS[fmt](stream, spec, policies, report)
