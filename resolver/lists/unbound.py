"""Unbound configuration lines, as blocklists are published for Unbound (unbound.conf(5),
`local-zone` and `local-data`):

    server:
    local-zone: "ads.example." always_nxdomain
    local-zone: "track.example" redirect
    local-data: "track.example. A 0.0.0.0"
    local-data: "pixel.example. 3600 IN AAAA ::"

A `local-zone` is a zone: its name and every name below it, whatever the list's `match` says.
Its type says the answer, as an RPZ record does, so it is kept (the list's `action` does not
apply):

    always_nxdomain, static     NXDOMAIN (static answers NXDOMAIN where it holds no local data)
    always_refuse, refuse       REFUSED
    redirect, inform_redirect   the landing answer (the zone's local data, here the landing)
    always_null                 the landing answer with 0.0.0.0 and ::, as Unbound answers
    deny, inform_deny,
    always_deny                 no answer at all
    always_nodata               NODATA

A `local-data` A or AAAA record makes its own name (only that name, as Unbound answers it)
answer with the landing action; the address in the file gives way to the list's landing
addresses, as a hosts file's does. Local data at a name wins over the zone type at that name,
as Unbound answers local data first (its always_* types, which ignore local data, are not
modelled: lists do not mix them).

A zone that passes names through (`transparent`, `typetransparent`, `inform`,
`always_transparent`) inside a blocked one is how Unbound lists make exceptions (the most
specific local zone decides): it becomes an allow entry of the same list, like an adblock `@@`
rule. (An explicit pass-through zone with local data at its own name is not modelled: the allow
wins there.)

Counted, never guessed: `nodefault` zones (they only undo a built-in zone), local data of other
types (a CNAME, TXT, MX...), `local-data-ptr`, and other Unbound options (`include:`,
`forward-zone:`, ...). `#` starts a
comment outside quotes; names may be quoted or not, with or without the final dot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import BinaryIO

from resolver.lists.adblock import allow_policy
from resolver.lists.directives import is_address, parse_directives
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected, normalise
from resolver.lists.plain import EntrySink, decode_line, list_policy
from resolver.policy import MATCH_SELF, MATCH_SUBTREE, Action, PolicyTable

SKIP_NOT_BLOCKING = "unbound_not_blocking"  # nodefault: undoes a built-in zone, blocks nothing
SKIP_DATA_TYPE = "unbound_data_type"  # local-data that is not A or AAAA (CNAME, TXT, MX)
SKIP_OTHER = "unbound_other_option"  # local-data-ptr, include:, forward-zone:, ...
REJECT_SYNTAX = "unbound_syntax"  # not `option: value`
REJECT_ZONE_TYPE = "unbound_zone_type"  # a local-zone type Unbound does not have
REJECT_BAD_DATA = "unbound_bad_data"  # local-data with no record, or A/AAAA with no address
REJECT_NOT_NAME = "unbound_not_a_name"  # `*.x` or an IP address where a zone name goes

# local-zone type -> (action, landing addresses: None for the list's own)
_ZONE_ACTIONS: dict[str, tuple[Action, tuple[tuple[str, ...], tuple[str, ...]] | None]] = {
    "always_nxdomain": (Action.NXDOMAIN, None),
    "static": (Action.NXDOMAIN, None),
    "always_refuse": (Action.REFUSED, None),
    "refuse": (Action.REFUSED, None),
    "redirect": (Action.LANDING, None),
    "inform_redirect": (Action.LANDING, None),
    "always_null": (Action.LANDING, (("0.0.0.0",), ("::",))),
    "deny": (Action.DROP, None),
    "inform_deny": (Action.DROP, None),
    "always_deny": (Action.DROP, None),
    "always_nodata": (Action.NODATA, None),
}
# A zone that passes its names through, inside a blocked zone: an exception (allow), as the
# most specific local zone decides in Unbound. `nodefault` only undoes a built-in zone.
_PASS_TYPES = frozenset({"transparent", "typetransparent", "inform", "always_transparent"})
_NOT_BLOCKING = frozenset({"nodefault", "noview"})
_ZONE_TYPES = tuple(_ZONE_ACTIONS)
_CLASSES = frozenset({"IN", "CH", "HS", "CS"})
_NULL_ADDRESSES = {b"A": (b"0.0.0.0", b"127.0.0.1"), b"AAAA": (b"::", b"::1")}
# A quoted value (double or single quotes), a `#` comment, or a bare word.
_TOKEN = re.compile(r"\"([^\"]*)\"|'([^']*)'|(#.*)|([^\s\"'#]+)")


def _bare(name: bytes) -> bytes:
    return name[:-1] if name.endswith(b".") and not name.endswith(b"..") else name


def _fast(line: bytes) -> tuple[bytes, int] | None:
    """`local-zone: "name." TYPE` (kind: 1 + the type's index) and `local-data: "name. A
    0.0.0.0"` with a null or loopback address (kind 0: the landing, exact)."""
    line = line.strip(b" \t")
    if line.startswith(b'local-zone: "'):
        end = line.find(b'"', 13)
        if end == -1:
            return None
        kind = _FAST_TYPES.get(line[end + 1 :].strip(b" \t"))
        name = _bare(line[13:end])
        return (name, kind) if kind is not None and name else None
    if line.startswith(b'local-data: "') and line.endswith(b'"'):
        fields = line[13:-1].split()
        if len(fields) == 3 and fields[2] in _NULL_ADDRESSES.get(fields[1], ()):
            name = _bare(fields[0])
            return (name, 0) if name else None
    return None


_FAST_TYPES = {name.encode(): 1 + i for i, name in enumerate(_ZONE_TYPES)}


class _Lines:
    def __init__(self, spec: ListSpec, policies: PolicyTable, sink: EntrySink) -> None:
        base = list_policy(spec)
        # The landing of local data first: at a tie on one name the lower policy id wins, and
        # local data answers before its zone's type.
        self.data_pid = policies.intern(replace(base, action=Action.LANDING))
        self.zone_pids: dict[str, int] = {}
        for zone_type, (action, null) in _ZONE_ACTIONS.items():
            policy = replace(base, action=action)
            if null is not None:
                policy = replace(policy, landing_ipv4=null[0], landing_ipv6=null[1])
            self.zone_pids[zone_type] = policies.intern(policy)
        self.allow_pid = policies.intern(allow_policy(spec))
        self.sink = sink
        self.report = sink.report

    def scopes(self) -> list[tuple[int, int]]:
        return [(self.data_pid, MATCH_SELF)] + [
            (self.zone_pids[t], MATCH_SUBTREE) for t in _ZONE_TYPES
        ]

    def line(self, raw: bytes, line_no: int) -> None:
        text = decode_line(raw, line_no, self.report)
        if text is None:
            return
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            return
        option, colon, rest = stripped.partition(":")
        option = option.strip()
        if not colon or not option or any(c.isspace() for c in option):
            self.report.reject(REJECT_SYNTAX, line_no, text)
            return
        values = [
            match.group(1) if match.group(1) is not None else match.group(2) or match.group(4)
            for match in _TOKEN.finditer(rest)
            if match.group(3) is None
        ]
        if option == "local-zone":
            self.zone(values, line_no, text)
        elif option == "local-data":
            self.data(values, line_no, text)
        elif option == "server" and not values:
            return  # the section header the options belong to
        else:
            self.report.skip(SKIP_OTHER, line_no, text)

    def zone(self, values: list[str], line_no: int, text: str) -> None:
        if len(values) != 2:
            self.report.reject(REJECT_SYNTAX, line_no, text)
            return
        name, zone_type = values[0], values[1].lower()
        if zone_type in _NOT_BLOCKING:
            self.report.skip(SKIP_NOT_BLOCKING, line_no, text)
            return
        pid = self.allow_pid if zone_type in _PASS_TYPES else self.zone_pids.get(zone_type)
        if pid is None:
            self.report.reject(REJECT_ZONE_TYPE, line_no, text)
            return
        self.add(name, pid, MATCH_SUBTREE, line_no, text)

    def data(self, values: list[str], line_no: int, text: str) -> None:
        fields = values[0].split() if len(values) == 1 else []
        if len(fields) < 2:
            self.report.reject(REJECT_BAD_DATA, line_no, text)
            return
        # name [ttl] [class] TYPE rdata, the RFC 1035 section 5.1 order Unbound reads
        rest = fields[1:]
        while rest and (rest[0].isdigit() or rest[0].upper() in _CLASSES):
            rest = rest[1:]
        rtype = rest[0].upper() if rest else ""
        if rtype not in ("A", "AAAA"):
            reason = REJECT_BAD_DATA if not rtype else SKIP_DATA_TYPE
            if reason == SKIP_DATA_TYPE:
                self.report.skip(reason, line_no, text)
            else:
                self.report.reject(reason, line_no, text)
            return
        if len(rest) != 2 or not is_address(rest[1], 4 if rtype == "A" else 6):
            self.report.reject(REJECT_BAD_DATA, line_no, text)
            return
        self.add(fields[0], self.data_pid, MATCH_SELF, line_no, text)

    def add(self, token: str, pid: int, match: int, line_no: int, text: str) -> None:
        try:
            name = normalise(token)
        except Rejected as rejected:
            self.report.reject(rejected.reason, line_no, text)
            return
        if name.is_ip or name.wildcard:
            # Unbound zone names are literal: `*.x` or an address is no name it can hold.
            self.report.reject(REJECT_NOT_NAME, line_no, text)
            return
        self.sink.add(name.name.encode("ascii"), pid, match)


def parse_unbound(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    report.format = "unbound"
    sink = EntrySink(report)
    lines = _Lines(spec, policies, sink)
    yield from parse_directives(stream, report, sink, lines.scopes(), _fast, lines.line)
