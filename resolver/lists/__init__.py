"""List parsers, one per format, behind one entry point: `parse_list`.

Every parser has the same shape: it reads a binary stream, interns the policies its entries need
in the shared `PolicyTable`, yields `Batch`es of normalised names, and fills a `ParseReport`.

The parsers are imported when a list is parsed, not with this package: the config reads
`FORMATS` in every process, but only the build process parses, and the parsers bring numpy
(chunks) and dnspython (rpz), about 25 MiB that `blokir serve` would otherwise carry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from resolver.lists.detect import detect_format
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.policy import PolicyTable

Parser = Callable[[BinaryIO, ListSpec, PolicyTable, ParseReport], Iterator[Batch]]

# format -> (module, function) of its parser
_PARSERS: dict[str, tuple[str, str]] = {
    "plain": ("resolver.lists.plain", "parse_plain"),
    "hosts": ("resolver.lists.hosts", "parse_hosts"),
    "adblock": ("resolver.lists.adblock", "parse_adblock"),
    "rpz": ("resolver.lists.rpz", "parse_rpz"),
    "dnsmasq": ("resolver.lists.dnsmasq", "parse_dnsmasq"),
    "unbound": ("resolver.lists.unbound", "parse_unbound"),
}
FORMATS = ("auto", *_PARSERS)
# `kind = "ip"` lists are read by their own parser, whatever their format says (auto or plain).
_IP_PARSER = ("resolver.lists.iplist", "parse_ip")
IP_FORMATS = ("auto", "plain")


def parser_for(fmt: str) -> Parser:
    """The parser of one format (not "auto"; "ip" for IP lists), imported on first use."""
    module, function = _IP_PARSER if fmt == "ip" else _PARSERS[fmt]
    parser: Parser = getattr(importlib.import_module(module), function)
    return parser


def parse_list(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    """Parse one list in its configured format, or the detected one when `format = "auto"`.
    The stream must be seekable when detecting (detection peeks at the head and rewinds)."""
    fmt = "ip" if spec.kind == "ip" else spec.format
    if fmt == "auto":
        head = stream.read(64 << 10)
        stream.seek(0)
        fmt = detect_format(head, spec.path)
    report.format = fmt
    return parser_for(fmt)(stream, spec, policies, report)
