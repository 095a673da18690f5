"""Export the merged policy by name to other engines' formats.

Formats: `rpz` (a Response Policy Zone for BIND, Unbound, PowerDNS Recursor, Knot Resolver),
`unbound` (an unbound.conf include of `local-zone:`/`local-data:`), `hosts` (`address name`
lines) and `dnsmasq` (`address=`/`local=`/`server=` lines).

The model (`compile.NamedEntries`): each listed name has up to two rules, one for the name itself
("self") and one for every name strictly below it ("below"). A query name gets its own self rule,
else the below rule of its nearest listed parent, else no policy. Each format is mapped onto that
model as exactly as the engine allows, checked against Unbound 1.17 and dnsmasq 2.90. A rule a
format cannot express is left out of the output, marked with a comment and counted by reason in
`ExportStats`: the export never claims more blocking than the engine will do. Leaving a rule out
means its names fall back to the nearest listed parent's below rule, exactly as if the rule were
not listed. A rule written with a nearby but different meaning (a hosts file has no NXDOMAIN) is
counted as approximated.

What each format cannot express:

- rpz: REFUSED (RPZ has no such action). Everything else is exact. Unbound matches RPZ wildcards
  by DNS closest encloser, so `*.example.com` stops applying below `www.example.com` as soon as
  `www.example.com` has its own trigger; the export therefore repeats a parent's below rule as
  `*.name` under every listed name (and every empty non-terminal) inside its subtree. BIND and
  PowerDNS use the longest matching wildcard, for which these records change nothing.
- unbound: a `local-zone` covers its name and the whole subtree. Exact: subtree rules, a landing
  name with any below rule that resolves normally (`transparent` + `local-data`) or answers
  NXDOMAIN (`static` + `local-data`), and any rule whose other scope already has the same answer
  by inheritance. Not expressible: other rules covering only the name or only the names below.
- hosts: matches exact names only, so every below rule is lost; NXDOMAIN, NODATA, REFUSED and
  DROP become the null addresses 0.0.0.0 and :: (approximated). Allow rules need no line.
- dnsmasq: `/name/` covers the subtree and `/*.name/` only the names below, so both scopes are
  exact, but dnsmasq has no NODATA, REFUSED or DROP answer for a domain. Its answers carry
  dnsmasq's `local-ttl` (0 by default), not `ttl`.
"""

from __future__ import annotations

import heapq
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from resolver import __version__
from resolver.dns.constants import MAX_TTL
from resolver.policy import Action, Policy

if TYPE_CHECKING:  # resolver.compile imports numpy, which `blokir serve` (importing the CLI) avoids
    from resolver.compile import NamedEntries

FORMATS = ("rpz", "unbound", "hosts", "dnsmasq")

# Names exactly as the normaliser makes them; anything else could break a format's syntax.
_SAFE_NAME = re.compile(rb"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_SAFE_ZONE = re.compile(r"(?:[a-z0-9_-]+\.)+")
# RPZ owner names ending in these labels are IP, NSDNAME, NSIP or client-IP triggers, not QNAMEs.
_RPZ_SPECIAL_LABELS = frozenset({b"rpz-ip", b"rpz-nsip", b"rpz-nsdname", b"rpz-client-ip"})
NULL_IPV4 = "0.0.0.0"
NULL_IPV6 = "::"

SELF = "self"
BELOW = "below"


@dataclass(slots=True)
class ExportStats:
    """What an export wrote. Counts are of rules: one per listed name and scope (the name itself,
    the names below it) that has a policy, so a subtree entry is two rules."""

    format: str
    names: int = 0  # listed names read
    lines: int = 0  # lines written, comments included
    written: Counter[str] = field(default_factory=Counter)  # rules written, by action
    not_expressible: Counter[str] = field(default_factory=Counter)  # rules left out, by reason
    approximated: Counter[str] = field(default_factory=Counter)  # written, nearby meaning
    skipped: Counter[str] = field(default_factory=Counter)  # rules that need no line here
    # Extra records repeating a parent's below rule under a listed name (rpz `*.name`, dnsmasq
    # `/*.name/`), so that the name's own rule does not cut it off from its subtree.
    inherited: int = 0

    def __str__(self) -> str:
        return f"{self.format}: {self.lines} lines; {_summary(self)}"

    @property
    def total_written(self) -> int:
        return sum(self.written.values())

    @property
    def total_not_expressible(self) -> int:
        return sum(self.not_expressible.values())

    def to_json(self) -> dict[str, object]:
        return {
            "format": self.format,
            "names": self.names,
            "lines": self.lines,
            "written": dict(sorted(self.written.items())),
            "not_expressible": dict(sorted(self.not_expressible.items())),
            "approximated": dict(sorted(self.approximated.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "inherited": self.inherited,
        }


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a name gets, as far as an engine can tell apart: `kind` is an Action value, or
    "normal" for resolving from upstream (an allow rule, or no rule at all)."""

    kind: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()


NORMAL = _Answer("normal")


def export(
    named: NamedEntries,
    fmt: str,
    out: TextIO,
    *,
    landing_ipv4: str | None,
    landing_ipv6: str | None,
    ttl: int = 60,
    zone: str = "rpz.blokir.",
    now: datetime | None = None,
) -> ExportStats:
    """Write `named` to `out` in format `fmt` (one of FORMATS), sorted by name, with a header
    saying what generated it and when (`now`, default the current UTC time) and a summary trailer.

    Landing addresses: a policy's own, per address family, else `landing_ipv4`/`landing_ipv6`.
    `ttl` is the TTL of written records (rpz, unbound); `zone` the RPZ zone's origin.
    Raises ValueError on an unknown format, a bad address, TTL or zone name."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not 0 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl {ttl} out of range 0..{MAX_TTL}")
    v4 = _addresses([landing_ipv4] if landing_ipv4 else [], 4, "landing_ipv4")
    v6 = _addresses([landing_ipv6] if landing_ipv6 else [], 6, "landing_ipv6")
    when = (now or datetime.now(UTC)).astimezone(UTC)
    writer = _WRITERS[fmt](named, _Answers(named, fmt, v4, v6), ttl, _zone_origin(zone))
    stats = writer.stats
    output = _Output(out, stats, writer.comment_prefix)
    output.comment(f"Generated by blokir {__version__} (`blokir export --format {fmt}`)")
    output.comment(f"at {when.strftime('%Y-%m-%dT%H:%M:%SZ')} from {stats.names} listed names.")
    for result in named.lists:
        digest = f" sha256 {result.sha256}" if result.sha256 else ""
        output.comment(f"source: {result.spec.name} ({result.spec.action.value}){digest}")
    for note in writer.notes:
        output.comment(note)
    writer.write(output, when)
    writer.write_ip(output)
    writer.finish()
    output.comment(f"summary: {_summary(stats)}")
    return stats


def _summary(stats: ExportStats) -> str:
    def fmt(counter: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"

    return (
        f"names {stats.names}; rules written: {fmt(stats.written)}; "
        f"not expressible: {fmt(stats.not_expressible)}; approximated: {fmt(stats.approximated)}; "
        f"skipped: {fmt(stats.skipped)}; inherited records {stats.inherited}"
    )


class _Output:
    """Lines to the output, counted. Record lines are built from checked names and addresses;
    comments may carry list names from the config, so they are forced onto one ASCII line."""

    def __init__(self, out: TextIO, stats: ExportStats, prefix: str) -> None:
        self._write = out.write
        self._stats = stats
        self._prefix = prefix

    def line(self, text: str) -> None:
        self._write(text + "\n")
        self._stats.lines += 1

    def lines(self, texts: Iterable[str]) -> None:
        for text in texts:
            self._write(text + "\n")
            self._stats.lines += 1

    def comment(self, text: str) -> None:
        if not (text.isascii() and text.isprintable()):
            text = "".join(ch if ch.isprintable() else "?" for ch in text)
            text = text.encode("ascii", "backslashreplace").decode("ascii")
        self.line(f"{self._prefix} {text}")


def _addresses(values: Iterable[str], family: int, what: str) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not an IP address") from None
        if address.version != family:
            raise ValueError(f"{what}: {value!r} is not an IPv{family} address")
        found.append(str(address))
    return tuple(found)


def _zone_origin(zone: str) -> str:
    origin = zone.strip().lower()
    if not origin.endswith("."):
        origin += "."
    if not _SAFE_ZONE.fullmatch(origin) or len(origin) > 254:
        raise ValueError(f"zone {zone!r} is not a usable domain name")
    return origin


class _Answers:
    """Policy id -> the answer one format gives for it, with the approximation made, if any."""

    def __init__(
        self, named: NamedEntries, fmt: str, ipv4: tuple[str, ...], ipv6: tuple[str, ...]
    ) -> None:
        self._named = named
        self._fmt = fmt
        self._ipv4 = ipv4
        self._ipv6 = ipv6
        self._cache: dict[int, tuple[_Answer, str | None]] = {}

    def policy(self, pid: int) -> Policy:
        return self._named.policies.get(pid)

    def get(self, pid: int) -> _Answer:
        return self._get(pid)[0]

    def approximation(self, pid: int) -> str | None:
        return self._get(pid)[1]

    def _get(self, pid: int) -> tuple[_Answer, str | None]:
        cached = self._cache.get(pid)
        if cached is None:
            cached = self._cache[pid] = self._make(self.policy(pid))
        return cached

    def _make(self, policy: Policy) -> tuple[_Answer, str | None]:
        action = policy.action
        if action is Action.ALLOW:
            return NORMAL, None
        if action is not Action.LANDING:
            if self._fmt == "hosts":
                return _Answer("landing", (NULL_IPV4,), (NULL_IPV6,)), f"{action}_as_null_address"
            return _Answer(action.value), None
        where = f"list {policy.list_name!r}"
        v4 = _addresses(policy.landing_ipv4, 4, f"{where} landing_ipv4") or self._ipv4
        v6 = _addresses(policy.landing_ipv6, 6, f"{where} landing_ipv6") or self._ipv6
        if v4 or v6:
            return _Answer("landing", v4, v6), None
        if self._fmt in ("hosts", "dnsmasq"):
            return _Answer("landing", (NULL_IPV4,), (NULL_IPV6,)), "landing_without_address"
        return _Answer("nodata"), "landing_without_address"


def _parents(name: bytes) -> Iterator[bytes]:
    """Proper parent names, nearest first, down to the top-level label."""
    rest = name
    while True:
        dot = rest.find(b".")
        if dot < 0:
            return
        rest = rest[dot + 1 :]
        yield rest


def _depth(name: bytes) -> int:
    return name.count(b".")


def _rules(pids: tuple[int, int]) -> tuple[tuple[str, int], ...]:
    self_pid, below_pid = pids
    if self_pid and below_pid:
        return ((SELF, self_pid), (BELOW, below_pid))
    return ((SELF, self_pid),) if self_pid else ((BELOW, below_pid),) if below_pid else ()


class _Writer:
    """One format. `write` emits the body; rules written are counted by policy id as it goes
    and turned into `stats` by `finish`."""

    fmt = ""
    comment_prefix = "#"
    notes: tuple[str, ...] = ()

    def __init__(self, named: NamedEntries, answers: _Answers, ttl: int, origin: str) -> None:
        self.named = named
        self.answers = answers
        self.ttl = ttl
        self.origin = origin
        self.stats = ExportStats(self.fmt, names=len(named.entries))
        self.written: Counter[int] = Counter()

    def write(self, output: _Output, when: datetime) -> None:
        raise NotImplementedError

    def write_ip(self, output: _Output) -> None:
        """Response-IP triggers: only RPZ can say "block answers holding this address"."""
        if self.named.ip:
            self.stats.not_expressible["ip_trigger"] += len(self.named.ip)
            output.comment(
                f"not expressible (ip_trigger): {len(self.named.ip)} IP triggers"
                " (export to RPZ keeps them)"
            )

    def finish(self) -> None:
        for pid, count in self.written.items():
            self.stats.written[self.answers.policy(pid).action.value] += count
            approximation = self.answers.approximation(pid)
            if approximation is not None:
                self.stats.approximated[approximation] += count

    @staticmethod
    def unsafe(name: bytes) -> bool:
        return len(name) > 253 or not _SAFE_NAME.fullmatch(name)

    def left_out(
        self, output: _Output | None, name: bytes, scope: str, pid: int, reason: str
    ) -> None:
        self.stats.not_expressible[reason] += 1
        if output is not None:
            policy = self.answers.policy(pid)
            text = name.decode("ascii", "backslashreplace")
            output.comment(
                f"not expressible ({reason}): {text} {scope} {policy.action.value}"
                f" (list {policy.list_name})"
            )


# -- RPZ ----------------------------------------------------------------------------------------

_RPZ_CNAME = {"nxdomain": ".", "nodata": "*.", "normal": "rpz-passthru.", "drop": "rpz-drop."}


class _RpzWriter(_Writer):
    fmt = "rpz"
    comment_prefix = ";"
    notes = (
        "RPZ: `name` is the name itself, `*.name` the names below it. REFUSED has no RPZ action.",
    )

    def __init__(self, named: NamedEntries, answers: _Answers, ttl: int, origin: str) -> None:
        super().__init__(named, answers, ttl, origin)
        self._rdata: dict[int, tuple[str, ...]] = {}

    def rdata(self, pid: int) -> tuple[str, ...]:
        """Type and data of a policy's records; empty when RPZ cannot express it (REFUSED)."""
        found = self._rdata.get(pid)
        if found is None:
            answer = self.answers.get(pid)
            if answer.kind == "landing":
                found = (*(f"A {a}" for a in answer.ipv4), *(f"AAAA {a}" for a in answer.ipv6))
            elif answer.kind in _RPZ_CNAME:
                found = (f"CNAME {_RPZ_CNAME[answer.kind]}",)
            else:
                found = ()
            self._rdata[pid] = found
        return found

    def name_problem(self, name: bytes) -> str | None:
        if self.unsafe(name):
            return "unsafe_name"
        if name.rsplit(b".", 1)[-1] in _RPZ_SPECIAL_LABELS:
            return "rpz_special_label"
        return None

    def inherited(self, below: dict[bytes, int], unsafe: set[bytes]) -> dict[bytes, int]:
        """Names that need `*.name` repeating their nearest parent's below rule: every listed
        name without a below rule of its own, and every parent up to that nearest one (empty
        non-terminals included: Unbound looks for the wildcard at the closest encloser)."""
        fill: dict[bytes, int] = {}
        for name in self.named.entries:
            if name in unsafe:
                continue
            path = [] if name in below else [name]
            for parent in _parents(name):
                pid = below.get(parent) or fill.get(parent)
                if pid:
                    for node in path:
                        fill[node] = pid
                    break
                path.append(parent)
        return fill

    def template(
        self, pids: tuple[int, int]
    ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, int], ...]]:
        """For a (self, below) pair: the records as (owner prefix, ` TYPE data`), and the rules
        RPZ cannot express. Computed once per pair (a policy has few), not once per name."""
        records: list[tuple[str, str]] = []
        refused: list[tuple[str, int]] = []
        for scope, pid in _rules(pids):
            rdata = self.rdata(pid)
            if not rdata:
                refused.append((scope, pid))
            prefix = "" if scope == SELF else "*."
            records.extend((prefix, f" {r}") for r in rdata)
        return tuple(records), tuple(refused)

    def write(self, output: _Output, when: datetime) -> None:
        output.lines(
            (
                f"$ORIGIN {self.origin}",
                f"$TTL {self.ttl}",
                f"@ SOA localhost. hostmaster.localhost. {int(when.timestamp())} 3600 600 604800"
                f" {self.ttl}",
                "@ NS localhost.",
            )
        )
        for _, lines in self.all_groups(output):
            output.lines(lines)

    def write_ip(self, output: _Output) -> None:
        """Written by `write`, in owner order among the names (all_groups)."""

    def all_groups(self, output: _Output | None) -> Iterator[tuple[str, list[str]]]:
        """The listed names' groups and the `rpz-ip` triggers' (ip_groups), merged in owner
        order: a zone transfer's difference of two versions is one merge of ordered files
        (resolver/xfr/snapshot.py)."""
        return heapq.merge(self.groups(output), self.ip_groups(output), key=lambda g: g[0])

    def ip_groups(self, output: _Output | None) -> Iterator[tuple[str, list[str]]]:
        """`rpz-ip` triggers (draft-vixie-dnsop-dns-rpz 4.2) as (owner, record lines), in owner
        order. An owner ends in the `rpz-ip` label, which no listed name written here has
        (name_problem leaves those out as `rpz_special_label`)."""
        triggers: list[tuple[str, list[str]]] = []
        for prefix, pid in self.named.ip.items():
            rdata = self.rdata(pid)
            if not rdata:
                self.left_out(output, prefix, "ip", pid, "action_refused")
                continue
            owner = rpz_ip_owner(prefix.decode("ascii"))
            triggers.append((owner, [f"{owner} {r}" for r in rdata]))
            self.written[pid] += 1
        triggers.sort()
        yield from triggers

    def groups(self, output: _Output | None) -> Iterator[tuple[str, list[str]]]:
        """Per name in name order, its record lines (`owner TYPE data`, owners relative to the
        origin; inherited wildcards end in a `; inherited` comment). A rule left out is counted,
        and commented in `output` when there is one. A generator, so a zone transfer can stream
        the zone without holding its text (resolver/xfr/snapshot.py)."""
        entries = self.named.entries
        problems = {n: p for n in entries if (p := self.name_problem(n)) is not None}
        unsafe = {n for n, p in problems.items() if p == "unsafe_name"}
        below = {
            name: pids[1]
            for name, pids in entries.items()
            if pids[1] and self.rdata(pids[1]) and name not in problems
        }
        fill = self.inherited(below, unsafe)
        self.stats.inherited = len(fill)
        templates: dict[tuple[int, int], tuple[tuple[tuple[str, str], ...], tuple[Any, ...]]] = {}
        pairs: Counter[tuple[int, int]] = Counter()  # names written per pair, for `written`
        for name in sorted(entries.keys() | fill.keys()):
            text = name.decode("ascii", "backslashreplace")
            lines: list[str] = []
            pids = entries.get(name)
            if pids is not None:
                problem = problems.get(name)
                if problem is not None:
                    for scope, pid in _rules(pids):
                        self.left_out(output, name, scope, pid, problem)
                else:
                    found = templates.get(pids)
                    if found is None:
                        found = templates[pids] = self.template(pids)
                    records, refused = found
                    lines = [prefix + text + rest for prefix, rest in records]
                    for scope, pid in refused:
                        self.left_out(output, name, scope, pid, "action_refused")
                    pairs[pids] += 1
            inherited = fill.get(name)
            if inherited is not None:
                lines.extend(f"*.{text} {r} ; inherited" for r in self.rdata(inherited))
            if lines:
                yield text, lines
        for (self_pid, below_pid), count in pairs.items():
            for pid in (self_pid, below_pid):
                if pid and self.rdata(pid):
                    self.written[pid] += count


def rpz_records(
    named: NamedEntries,
    *,
    landing_ipv4: str | None,
    landing_ipv6: str | None,
    ttl: int = 60,
    zone: str = "rpz.blokir.",
) -> tuple[ExportStats, Iterator[tuple[str, list[str]]]]:
    """The body of `export(named, "rpz", ...)` without header, SOA and NS: (name, record lines)
    per name in name order, lazily; the stats fill in as the records are consumed."""
    writer = rpz_writer(
        named, landing_ipv4=landing_ipv4, landing_ipv6=landing_ipv6, ttl=ttl, zone=zone
    )

    def records() -> Iterator[tuple[str, list[str]]]:
        yield from writer.all_groups(None)
        writer.finish()

    return writer.stats, records()


def rpz_writer(
    named: NamedEntries,
    *,
    landing_ipv4: str | None,
    landing_ipv6: str | None,
    ttl: int,
    zone: str,
) -> _RpzWriter:
    """The RPZ writer itself, for code that needs the records of single names by the same rules
    (`template`, `rdata`, `name_problem`; resolver/xfr/incremental.py)."""
    if not 0 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl {ttl} out of range 0..{MAX_TTL}")
    v4 = _addresses([landing_ipv4] if landing_ipv4 else [], 4, "landing_ipv4")
    v6 = _addresses([landing_ipv6] if landing_ipv6 else [], 6, "landing_ipv6")
    return _RpzWriter(named, _Answers(named, "rpz", v4, v6), ttl, _zone_origin(zone))


def rpz_ip_owner(prefix: str) -> str:
    """`192.0.2.0/24` -> `24.0.2.0.192.rpz-ip`; `2001:db8::/32` -> `32.zz.db8.2001.rpz-ip`: the
    prefix length, then the address least significant part first, `zz` for the `::` run."""
    network = ipaddress.ip_network(prefix)
    if network.version == 4:
        parts = str(network.network_address).split(".")
    else:
        text = network.network_address.compressed
        head, double, tail = text.partition("::")
        parts = [*(head.split(":") if head else []), *(["zz"] if double else [])]
        parts += tail.split(":") if tail else []
    return ".".join([str(network.prefixlen), *reversed(parts), "rpz-ip"])


# -- formats where a name's rule also decides its subtree ---------------------------------------

_NAME = "\x00"  # where the name goes in a cached decision's lines


@dataclass(frozen=True, slots=True)
class _Decision:
    """How a listed name is rendered, for one (self pid, below pid, inherited answer): lines
    with `_NAME` for the name, rules kept and left out, and the answer its subtree then gets
    (None when nothing is written for the name)."""

    lines: tuple[str, ...]
    kept: tuple[int, ...]
    dropped: tuple[tuple[str, int, str], ...]  # (scope, pid, reason)
    below: _Answer | None
    inherited_lines: int = 0


class _InheritingWriter(_Writer):
    """Unbound local zones and dnsmasq domains cover a name and its subtree, so how a name is
    rendered depends on what its subtree inherits from the nearest written parent. A first pass,
    parents first, records the answer each written name leaves to its subtree; the second, in
    name order, writes. Decisions depend only on (pids, inherited answer) and are cached."""

    def __init__(self, named: NamedEntries, answers: _Answers, ttl: int, origin: str) -> None:
        super().__init__(named, answers, ttl, origin)
        self._decisions: dict[tuple[tuple[int, int], _Answer], _Decision] = {}

    def decide(self, pids: tuple[int, int], inherited: _Answer) -> _Decision:
        raise NotImplementedError

    def begin(self, output: _Output) -> None:
        pass

    def decision(self, pids: tuple[int, int], inherited: _Answer) -> _Decision:
        key = (pids, inherited)
        found = self._decisions.get(key)
        if found is None:
            found = self._decisions[key] = self.decide(pids, inherited)
        return found

    def write(self, output: _Output, when: datetime) -> None:
        self.begin(output)
        entries = self.named.entries
        subtree: dict[bytes, _Answer] = {}
        for name in sorted(entries, key=_depth):
            if not self.unsafe(name):
                decision = self.decision(entries[name], self.inherited(name, subtree))
                if decision.below is not None:
                    subtree[name] = decision.below
        for name in sorted(entries):
            pids = entries[name]
            if self.unsafe(name):
                for scope, pid in _rules(pids):
                    self.left_out(output, name, scope, pid, "unsafe_name")
                continue
            decision = self.decision(pids, self.inherited(name, subtree))
            text = name.decode("ascii")
            output.lines(line.replace(_NAME, text) for line in decision.lines)
            self.written.update(decision.kept)
            for scope, pid, reason in decision.dropped:
                self.left_out(output, name, scope, pid, reason)
            self.stats.inherited += decision.inherited_lines

    @staticmethod
    def inherited(name: bytes, subtree: dict[bytes, _Answer]) -> _Answer:
        for parent in _parents(name):
            answer = subtree.get(parent)
            if answer is not None:
                return answer
        return NORMAL


# -- Unbound local-zone -------------------------------------------------------------------------

_UNBOUND_TYPES = {
    "nxdomain": "always_nxdomain",
    "nodata": "always_nodata",
    "refused": "always_refuse",
    "drop": "always_deny",
    "normal": "always_transparent",
}


def _unbound_zone(at: _Answer, below: _Answer) -> tuple[str, _Answer | None] | None:
    """The local-zone type giving `at` to the zone's name and `below` to its subtree, with the
    answer whose addresses go in local-data at the name; None if no type does."""
    if at == below:
        if at.kind == "landing":
            return "redirect", at  # the name's data answers the whole subtree
        return _UNBOUND_TYPES[at.kind], None
    if at.kind == "landing":
        # Local data answers the name (other types: NODATA); the type decides the subtree.
        # (`refuse` and `deny` with local data refuse or drop the name's other types.)
        if below.kind == "nxdomain":
            return "static", at
        if below.kind == "normal":
            return "transparent", at
    return None


def _scope_reason(scope: str, pids: tuple[int, int]) -> str:
    if pids[0] and pids[1]:
        return "mixed_scopes"
    return "exact_scope" if scope == SELF else "below_scope"


class _UnboundWriter(_InheritingWriter):
    fmt = "unbound"
    notes = (
        "Unbound local zones: a local-zone covers its name and everything below it.",
        "Include this file from unbound.conf (it opens a `server:` clause).",
    )

    def begin(self, output: _Output) -> None:
        output.line("server:")

    def decide(self, pids: tuple[int, int], inherited: _Answer) -> _Decision:
        rules = _rules(pids)
        answer = {scope: self.answers.get(pid) for scope, pid in rules}
        # Both rules if one zone can carry them; else without the name's own rule, then without
        # the below one (keeping the rule that covers more names), else nothing.
        for keep in ((SELF, BELOW), (BELOW,), (SELF,)):
            kept = [(scope, pid) for scope, pid in rules if scope in keep]
            if not kept:
                continue
            at = answer[SELF] if SELF in keep and SELF in answer else inherited
            below = answer[BELOW] if BELOW in keep and BELOW in answer else inherited
            zone = _unbound_zone(at, below)
            if zone is None:
                continue
            kind, data = zone
            lines = [f'local-zone: "{_NAME}." {kind}']
            if data is not None:
                lines += [f'local-data: "{_NAME}. {self.ttl} IN A {a}"' for a in data.ipv4]
                lines += [f'local-data: "{_NAME}. {self.ttl} IN AAAA {a}"' for a in data.ipv6]
            dropped = tuple(
                (scope, pid, _scope_reason(scope, pids))
                for scope, pid in rules
                if scope not in keep
            )
            return _Decision(tuple(lines), tuple(pid for _, pid in kept), dropped, below)
        dropped = tuple((scope, pid, _scope_reason(scope, pids)) for scope, pid in rules)
        return _Decision((), (), dropped, None)


# -- dnsmasq ------------------------------------------------------------------------------------


class _DnsmasqWriter(_InheritingWriter):
    fmt = "dnsmasq"
    notes = (
        "dnsmasq: /name/ is the name and everything below it, /*.name/ only the names below;",
        "the most specific domain wins. No NODATA, REFUSED or DROP answers. Answers use",
        "dnsmasq's local-ttl (0 unless set). Load with --conf-file or from conf-dir.",
    )

    @staticmethod
    def lines(pattern: str, answer: _Answer) -> list[str]:
        if answer.kind == "normal":
            return [f"server=/{pattern}/#"]
        if answer.kind == "nxdomain":
            return [f"address=/{pattern}/"]
        # Since 2.86 other query types are forwarded unless the domain is also `local`.
        lines = [f"address=/{pattern}/{a}" for a in (*answer.ipv4, *answer.ipv6)]
        return [*lines, f"local=/{pattern}/"]

    def decide(self, pids: tuple[int, int], inherited: _Answer) -> _Decision:
        kept: list[int] = []
        dropped: list[tuple[str, int, str]] = []
        answer: dict[str, _Answer] = {}
        for scope, pid in _rules(pids):
            got = self.answers.get(pid)
            if got.kind in ("nodata", "refused", "drop"):
                dropped.append((scope, pid, f"action_{got.kind}"))
            else:
                kept.append(pid)
                answer[scope] = got
        lines: list[str] = []
        subtree = inherited
        if SELF in answer:
            lines += self.lines(_NAME, answer[SELF])
            subtree = answer[SELF]  # /name/ covers the names below too...
        below = answer.get(BELOW, inherited)
        inherited_lines = 0
        # ...unless /*.name/ says otherwise. A below rule alone always gets its line, even if it
        # changes nothing (an allow with nothing above it), so every kept rule is in the file.
        if below != subtree or (BELOW in answer and SELF not in answer):
            lines += self.lines(f"*.{_NAME}", below)
            inherited_lines = 0 if BELOW in answer else 1
        return _Decision(
            tuple(lines), tuple(kept), tuple(dropped), below if lines else None, inherited_lines
        )


# -- hosts --------------------------------------------------------------------------------------


class _HostsWriter(_Writer):
    fmt = "hosts"
    notes = (
        "hosts: exact names only; names below a listed name are not covered. NXDOMAIN, NODATA,",
        "REFUSED and DROP are written as the null addresses 0.0.0.0 and ::.",
    )

    def write(self, output: _Output, when: datetime) -> None:
        addresses: dict[int, tuple[str, ...]] = {}
        for name, pids in sorted(self.named.entries.items()):
            if self.unsafe(name):
                for scope, pid in _rules(pids):
                    self.left_out(output, name, scope, pid, "unsafe_name")
                continue
            self_pid, below_pid = pids
            wrote = False
            if self_pid:
                found = addresses.get(self_pid)
                if found is None:
                    answer = self.answers.get(self_pid)
                    found = addresses[self_pid] = (*answer.ipv4, *answer.ipv6)
                if found:  # blocks: the landing or null addresses
                    text = name.decode("ascii")
                    output.lines(f"{address} {text}" for address in found)
                    self.written[self_pid] += 1
                    wrote = True
                else:  # an allow: a hosts file needs no line for it
                    self.stats.skipped["allow"] += 1
            if below_pid:
                if self.answers.get(below_pid).kind == "normal":
                    self.stats.skipped["allow"] += 1
                else:
                    # A subtree entry's lost half is only counted: the header says so once.
                    self.left_out(None if wrote else output, name, BELOW, below_pid, "below_scope")


_WRITERS: dict[str, type[_Writer]] = {
    "rpz": _RpzWriter,
    "unbound": _UnboundWriter,
    "hosts": _HostsWriter,
    "dnsmasq": _DnsmasqWriter,
}
