"""IP lists: addresses and CIDR prefixes whose appearance in an answer blocks it (response-IP
triggers; the regulator's `ipaddress_isp` beside its domain list).

One or more entries per line (split as in plain lists: blanks, `,`, `;`, `|`), `#` comments,
blank lines; the file may have a BOM and CRLF line ends. Accepted per entry: `192.0.2.1`,
`192.0.2.0/24`, `2001:db8::/32`, `192.0.2.1:80` and `[2001:db8::1]:443` (the port is dropped:
DNS answers carry no ports), `http://192.0.2.1/path` (the address is kept), and
`192.0.2.10-192.0.2.20` (a range, split into the prefixes that cover it exactly). Rejected with
a reason and file:line, never aborting the load: wildcards such as `*.1.2.3.4`
(`wildcard_address`: a domain-list habit that means nothing for an address), names
(`not_an_address`), bad prefix lengths, IPv4 with leading zeros (`bad_address`: octal or decimal
is ambiguous), zone ids (`fe80::1%eth0`).

A prefix written with host bits set (`192.0.2.7/24`) is taken as the prefix it names
(192.0.2.0/24): lists written by hand do this, and the intent is plain.

Entries travel as `Batch(names=[b"192.0.2.0/24", ...], match=MATCH_IP)`: canonical text, so
the exporter can write them and the compiler turns them into integers (`parse_prefix`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import BinaryIO

from resolver.lists.chunks import read_chunks
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected, before_path, without_scheme
from resolver.lists.plain import decode_line, list_policy
from resolver.policy import MATCH_IP, PolicyTable

_TOKEN_SPLIT = re.compile(r"[\s,;|]+")
_PORT_RE = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?):\d{1,5}$")
_BRACKETED_RE = re.compile(r"^\[([0-9A-Fa-f:.]+)\](?::\d{1,5})?$")
_STRIP = " \t\r\n\f\v\ufeff"
# A range wider than this many prefixes is taken for a typo (a whole /8 written as a range needs
# one; a badly aligned range of a /16 needs at most 30).
MAX_RANGE_PREFIXES = 256


def parse_prefix(token: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One address or CIDR prefix, strict about its syntax, lenient about host bits."""
    if "%" in token:
        raise Rejected("zone_id")
    address, slash, length = token.partition("/")
    if slash and not length.isdigit():
        raise Rejected("bad_prefix_length")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise Rejected("bad_address") from None
    bits = ip.max_prefixlen
    if slash and not 0 <= int(length) <= bits:
        raise Rejected("bad_prefix_length")
    return ipaddress.ip_network((ip, int(length) if slash else bits), strict=False)


def clean_token(token: str) -> str:
    """A list token as an address or prefix: URL scheme, path, port and brackets taken off."""
    text = token.strip(_STRIP)
    if "*" in text:
        raise Rejected("wildcard_address")
    text, url = without_scheme(text)
    if url:  # a URL's path is no prefix length
        text = before_path(text)
    bracketed = _BRACKETED_RE.match(text)
    if bracketed:
        return bracketed.group(1)
    port = _PORT_RE.match(text)
    return port.group(1) if port else text


def prefixes_of(token: str) -> list[str]:
    """The canonical prefixes (`192.0.2.0/24`) one list token stands for; raises Rejected."""
    text = clean_token(token)
    if not text:
        raise Rejected("empty")
    if not (text[0].isdigit() or ":" in text or text[0] in "abcdefABCDEF"):
        raise Rejected("not_an_address")
    if "-" in text:
        first, _, last = text.partition("-")
        try:
            low = ipaddress.ip_address(first)
            high = ipaddress.ip_address(last)
            networks = list(ipaddress.summarize_address_range(low, high))
        except (ValueError, TypeError):
            raise Rejected("bad_range") from None
        if len(networks) > MAX_RANGE_PREFIXES:
            raise Rejected("bad_range")
        return [str(n) for n in networks]
    try:
        network = parse_prefix(text)
    except Rejected as rejected:
        if rejected.reason == "bad_address" and not any(c.isdigit() for c in text.split(".")[-1]):
            raise Rejected("not_an_address") from None
        raise
    if network.prefixlen == 0:
        raise Rejected("whole_address_space")  # would block every answer: a typo, not a listing
    return [str(network)]


def parse_ip(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    report.format = "ip"
    pid = policies.intern(list_policy(spec))
    for first_line, chunk in read_chunks(stream):
        lines = chunk.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        report.lines += len(lines)
        found: list[bytes] = []
        for offset, raw in enumerate(lines):
            line_no = first_line + offset
            text = decode_line(raw, line_no, report)
            if text is None:
                continue
            body = text.split("#", 1)[0].strip(_STRIP)
            for token in _TOKEN_SPLIT.split(body):
                if not token:
                    continue
                try:
                    prefixes = prefixes_of(token)
                except Rejected as rejected:
                    report.reject(rejected.reason, line_no, text)
                    continue
                report.entries += len(prefixes)
                found += [p.encode("ascii") for p in prefixes]
        if found:
            yield Batch(found, pid, MATCH_IP)
