"""dnsmasq configuration lines, as blocklists are published for dnsmasq (and Pi-hole, OpenWrt):

    local=/ads.example/                   NXDOMAIN for ads.example and every name below it
    server=/ads.example/                  the same (`local` is a synonym of `server`)
    address=/ads.example/                 the same
    address=/ads.example/0.0.0.0          the null address for the name and every name below;
    address=/ads.example/::  or  /#       likewise (`#` is dnsmasq's "0.0.0.0 and ::")
    address=/a.example/b.example/#        several names share one directive
    server=/ok.ads.example/#              an exception: "use the normal upstream servers"

dnsmasq matches a directive's domain and everything below it (dnsmasq(8), `--server` and
`--address`), so every entry covers its subtree whatever the list's `match` says; a leading
`*.` covers only the names below. As in hosts files, the answer the file names (NXDOMAIN or an
address) gives way to the list's configured policy, so one list published in several syntaxes
blocks the same way in all of them. `server=/name/#` becomes an allow entry of the same list,
as an `@@` exception does in an adblock list.

What a resolver cannot or should not enforce is counted, never guessed into an entry: a
`server=` that forwards a domain to another upstream (`server=/corp.example/10.0.0.53`), a
directive for every domain (`address=/#/...`), a wildcard inside a label, other dnsmasq options
(`conf-file=`, `ipset=`, ...), and lines that are no dnsmasq directive at all.

Comments: a `#` at the start of a line, or after a blank, starts one (as dnsmasq reads its
files); `address=/x/#` keeps its `#`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from resolver.lists.adblock import BlockAllowLines
from resolver.lists.directives import is_address, parse_directives
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected, normalise
from resolver.lists.plain import EntrySink, decode_line
from resolver.policy import MATCH_BELOW, MATCH_SUBTREE, PolicyTable

SKIP_FORWARD = "dnsmasq_forward"  # server=/name/10.0.0.53: a forwarding rule, not a block
SKIP_ALL_DOMAINS = "dnsmasq_all_domains"  # address=/#/...: every name, never a list entry
SKIP_WILDCARD = "dnsmasq_wildcard"  # a `*` pattern other than a leading `*.`
SKIP_OTHER = "dnsmasq_other_option"  # conf-file=, ipset=, cache-size=, ...
REJECT_SYNTAX = "dnsmasq_syntax"  # not `option=value`: a bare name, a hosts line, junk
REJECT_NO_DOMAIN = "dnsmasq_no_domain"  # local=, address=/, a value not in `/name/` form
REJECT_BAD_TARGET = "dnsmasq_bad_target"  # address=/name/not-an-address

# The directives that name domains (dnsmasq(8) `--address`, `--server`, `--local`).
_DOMAIN_OPTIONS = frozenset({"address", "server", "local"})
# Targets that mean "block" on the fast path: no address, the null addresses and `#`.
_FAST_ADDRESS_TARGETS = frozenset({b"", b"0.0.0.0", b"::", b"#"})
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def _fast(line: bytes) -> tuple[bytes, int] | None:
    """The name of `local=/name/`, `server=/name/`, `address=/name/` and `address=/name/TARGET`
    with a null TARGET: one name, kind 0 (the list's block policy, subtree)."""
    if line.startswith(b"address=/"):
        rest = line[9:]
    elif line.startswith((b"local=/", b"server=/")):
        rest = line[line.index(b"/") + 1 :]
        if not rest.endswith(b"/") or rest.count(b"/") != 1:
            return None
        name = rest[:-1]
        return (name, 0) if name and b"*" not in name and b"#" not in name else None
    else:
        return None
    name, slash, target = rest.partition(b"/")
    if not slash or not name or b"/" in target or target not in _FAST_ADDRESS_TARGETS:
        return None
    return (name, 0) if b"*" not in name and b"#" not in name else None


class _Lines(BlockAllowLines):
    def line(self, raw: bytes, line_no: int) -> None:
        text = decode_line(raw, line_no, self.report)
        if text is None:
            return
        body = _COMMENT.sub("", text).strip()
        if not body:
            return
        if body.startswith("--"):
            body = body[2:]  # the command-line spelling, `--address=/x/`
        option, equals, value = body.partition("=")
        option = option.strip()
        if not equals or not option or " " in option:
            self.report.reject(REJECT_SYNTAX, line_no, text)
            return
        if option not in _DOMAIN_OPTIONS:
            self.report.skip(SKIP_OTHER, line_no, text)
            return
        value = value.strip()
        if not value.startswith("/"):
            if option == "server" and value:
                self.report.skip(SKIP_FORWARD, line_no, text)  # server=10.0.0.53: an upstream
            else:
                self.report.reject(REJECT_NO_DOMAIN, line_no, text)
            return
        *domains, target = value[1:].split("/")
        domains = [d for d in domains if d.strip()]
        if not domains:
            self.report.reject(REJECT_NO_DOMAIN, line_no, text)
            return
        pid = self._pid(option, target.strip(), line_no, text)
        if pid is None:
            return
        for domain in domains:
            self.add(domain.strip(), pid, line_no, text)

    def _pid(self, option: str, target: str, line_no: int, text: str) -> int | None:
        """The policy a directive's domains get, or None (counted) when it blocks nothing."""
        if option == "address":
            if target in ("", "#") or is_address(target):
                return self.block_pid
            self.report.reject(REJECT_BAD_TARGET, line_no, text)
            return None
        # server / local: no address is NXDOMAIN, `#` is "the usual upstreams".
        if target == "":
            return self.block_pid
        if target == "#":
            return self.allow_pid
        self.report.skip(SKIP_FORWARD, line_no, text)
        return None

    def add(self, domain: str, pid: int, line_no: int, text: str) -> None:
        if domain == "#":
            self.report.skip(SKIP_ALL_DOMAINS, line_no, text)
            return
        below = domain.startswith("*.")
        if "*" in (domain[2:] if below else domain):
            self.report.skip(SKIP_WILDCARD, line_no, text)
            return
        try:
            name = normalise(domain)
        except Rejected as rejected:
            self.report.reject(rejected.reason, line_no, text)
            return
        if name.is_ip:
            self.report.reject(REJECT_NO_DOMAIN, line_no, text)
            return
        self.sink.add(name.name.encode("ascii"), pid, MATCH_BELOW if below else MATCH_SUBTREE)


def parse_dnsmasq(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    report.format = "dnsmasq"
    sink = EntrySink(report)
    lines = _Lines(spec, policies, sink)
    yield from parse_directives(
        stream, report, sink, [(lines.block_pid, MATCH_SUBTREE)], _fast, lines.line
    )
