"""RPZ zone files: Response Policy Zones (draft-vixie-dnsop-dns-rpz, the BIND ARM's "Response
Policy Zones" section) in RFC 1035 section 5 master-file syntax.

QNAME and response-IP triggers are enforced. A record's owner name relative to the policy zone
apex is the trigger (`*.name` covers the names strictly below `name`; `24.0.2.0.192.rpz-ip`
covers answers holding an address in 192.0.2.0/24, `48.zz.db8.2001.rpz-ip` 2001:db8::/48: the
prefix length, then the address's labels in reverse, `zz` standing for the `::` run); the record
says what to do:

    name CNAME .               NXDOMAIN
    name CNAME *.              NODATA
    name CNAME rpz-passthru.   an exception (allow); so is the deprecated CNAME to the trigger
                               itself (`name CNAME name.`)
    name CNAME rpz-drop.       no answer at all
    name A / AAAA addr         a landing page: every A/AAAA record of one owner, even far apart
                               in the file, makes one policy with all the addresses

Anything else a policy zone may hold is counted as skipped, never silently dropped:
`rpz-tcp-only`, CNAME rewrites to other names, other record types, and the NSIP, NSDNAME and
client-IP triggers (owners under the special labels `rpz-nsip`, ...).

Where the apex is. A zone file does not name its zone (named.conf does), so the apex is taken
from the file: an SOA record whose owner is absolute (or written relative to a known origin)
sets it; a `$ORIGIN` sets it too unless the new origin lies inside the current apex, in which
case it only abbreviates the names that follow (`$ORIGIN rpz-ip.rpz.example.` inside zone
`rpz.example.` makes `32.1.0.0.127` an rpz-ip trigger, as BIND reads it). With neither, the
apex is the root and relative owners are the triggers themselves (the shape of most published
RPZ feeds: `@ SOA ...` then `name CNAME .`). An absolute owner outside the apex is rejected.

Speed. The common line, `name CNAME .` (optionally with a TTL and class), takes a fast path: a
split and a few comparisons per line, then the names of a whole chunk are checked at once by the
same vectorised scan the plain lists use (`chunks.suspect_lines`); only the names it flags go to
the normaliser. Everything else goes through a small tokenizer (quotes, escapes, comments,
parentheses spanning lines). A bad line never aborts the load: it is counted and the next line
is read. A `(` that never closes swallows at most MAX_GROUP_LINES lines, which are then re-read
on their own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import dns.exception
import dns.name
import dns.rdatatype

from resolver.lists.chunks import CHUNK_BYTES, read_chunks, suspect_lines
from resolver.lists.iplist import parse_prefix
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected, normalise
from resolver.lists.plain import EntrySink, decode_line
from resolver.policy import MATCH_BELOW, MATCH_IP, MATCH_SELF, Action, Ede, Policy, PolicyTable

# A `(` left open for more lines than this is taken for garbage: an SOA needs about seven.
MAX_GROUP_LINES = 64

_CNAME_ACTIONS = {
    ".": Action.NXDOMAIN,
    "*.": Action.NODATA,
    "rpz-passthru.": Action.ALLOW,
    "rpz-drop.": Action.DROP,
}
_SPECIAL_LABELS = {
    "rpz-ip": "rpz_ip_trigger",
    "rpz-nsip": "rpz_nsip_trigger",
    "rpz-nsdname": "rpz_nsdname_trigger",
    "rpz-client-ip": "rpz_client_ip_trigger",
}
_CLASSES = frozenset({"IN", "CH", "HS", "CS"})
_TTL_RE = re.compile(r"[0-9]+|(?:[0-9]+[smhdwSMHDW])+")
# One master-file token: a quoted string, a parenthesis, a comment (the rest of the line), a
# word (escapes allowed), or a stray character that starts none of these (an unclosed quote, a
# backslash at the end of the line).
# Blanks are ASCII only (as for bytes.split on the fast path): a no-break space is not one.
_TOKEN_RE = re.compile(
    r'[ \t\v\f]*(?:("(?:[^"\\]|\\.)*")|(\()|(\))|(;.*)|((?:[^ \t\v\f"();\\]|\\.)+)|(.))',
    re.DOTALL,
)
_BLANKS_RE = re.compile(r"[ \t\v\f]+")
# Characters a trigger name never has, which `normalise` would otherwise read as URL syntax or
# a wildcard (it strips schemes, ports, paths and `*.` prefixes from plain-list tokens).
_BAD_TRIGGER_RE = re.compile(r"[\s*/:?#@\[\]\\]")

# Fast path: `owner [ttl] [IN] CNAME .` with none of the bytes that need the tokenizer.
_FAST_CNAME = frozenset({b"CNAME", b"cname", b"Cname"})
_FAST_IN = frozenset({b"IN", b"in", b"In"})
_SPECIAL_BYTES = (b";", b"(", b")", b'"', b"\\")
_AT, _DOLLAR, _DOT, _STAR, _SPACE, _TAB = 0x40, 0x24, 0x2E, 0x2A, 0x20, 0x09


@dataclass(slots=True)
class _Group:
    """A record whose `(` is still open: its tokens so far and the lines it has taken."""

    line_no: int
    text: str
    inherit: bool
    tokens: list[str]
    depth: int
    lines: list[tuple[int, bytes]] = field(default_factory=list)


def _tokenize(text: str, depth: int) -> tuple[list[str], int]:
    """Split one line into tokens (quoted strings keep their quotes) and return the parenthesis
    depth after it. Raises Rejected for an unclosed quote, a stray `)` or a dangling backslash."""
    if '"' not in text and "\\" not in text and "(" not in text and ")" not in text:
        # The common case: no quoting at all.
        return [token for token in _BLANKS_RE.split(text.split(";", 1)[0]) if token], depth
    tokens: list[str] = []
    pos = 0
    while True:
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            return tokens, depth
        pos = match.end()
        quoted, opening, closing, comment, word, stray = match.groups()
        if word is not None:
            tokens.append(word)
        elif quoted is not None:
            tokens.append(quoted)
        elif opening is not None:
            depth += 1
        elif closing is not None:
            if depth == 0:
                raise Rejected("unbalanced_parens")
            depth -= 1
        elif comment is not None:
            return tokens, depth
        else:
            raise Rejected("unbalanced_quotes" if stray == '"' else "bad_escape")


def _labels(token: str, origin: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """An owner or directive name as absolute labels (root = ()), and whether it was written
    absolute. Case is kept (IDN must be folded by the normaliser, not here)."""
    if token == "@":
        return origin, False
    if token == ".":
        return (), True
    if "\\" in token:
        try:
            name = dns.name.from_text(token, origin=None)
        except dns.name.LabelTooLong:
            raise Rejected("label_too_long") from None
        except dns.name.NameTooLong:
            raise Rejected("name_too_long") from None
        except dns.name.EmptyLabel:
            raise Rejected("empty_label") from None
        except (dns.exception.DNSException, ValueError, UnicodeError):
            raise Rejected("bad_escape") from None
        labels: list[str] = []
        for raw in name.labels:
            if not raw:
                continue  # the root label of an absolute name
            try:
                label = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Rejected("encoding") from None
            if "." in label:
                raise Rejected("bad_character")  # `\.` inside a label: no host has that
            labels.append(label)
        absolute = name.is_absolute()
    else:
        labels = token.split(".")
        absolute = labels[-1] == ""
        if absolute:
            labels.pop()
        if "" in labels:
            raise Rejected("empty_label")
    if absolute:
        return tuple(labels), True
    return (*labels, *origin), False


def _lower(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(label.lower() for label in labels)


def _is_under(name: tuple[str, ...], apex: tuple[str, ...]) -> bool:
    return len(name) >= len(apex) and name[len(name) - len(apex) :] == apex


class _RpzParser:
    """The state one zone file carries from line to line."""

    def __init__(self, spec: ListSpec, policies: PolicyTable, report: ParseReport) -> None:
        self.spec = spec
        self.policies = policies
        self.report = report
        self.sink = EntrySink(report)
        self.origin: tuple[str, ...] = ()  # lower-case labels; () is the root
        self.apex: tuple[str, ...] = ()
        self.origin_directive = False  # a $ORIGIN has been seen
        self.soa_owner: tuple[str, ...] | None = None
        self.last_owner: tuple[str, tuple[str, ...]] | None = None  # (token, origin then)
        self.group: _Group | None = None
        # Local data (A/AAAA), keyed by (name, match): flushed as one policy per owner at the end.
        self.local: dict[tuple[bytes, int], tuple[list[str], list[str]]] = {}
        self.pids: dict[Action, int] = {}
        self.apex_suffix = b""
        self.rel_suffix: bytes | None = b""
        self._update_fast()

    # -- policies -------------------------------------------------------------------------

    def pid(self, action: Action) -> int:
        pid = self.pids.get(action)
        if pid is None:
            pid = self.pids[action] = self._intern(action, (), ())
        return pid

    def _intern(self, action: Action, v4: tuple[str, ...], v6: tuple[str, ...]) -> int:
        spec = self.spec
        return self.policies.intern(
            Policy(
                list_name=spec.name,
                category=spec.category,
                action=action,
                ede=Ede.NONE if action is Action.ALLOW else spec.ede,
                landing_ipv4=v4,
                landing_ipv6=v6,
                list_index=spec.list_index,
            )
        )

    # -- chunks and the fast path ---------------------------------------------------------

    def _update_fast(self) -> None:
        """Precompute what the fast path needs to turn an owner into a trigger: the absolute
        suffix to strip and what to append to relative owners (None: they take the slow path)."""
        self.apex_suffix = ("." + ".".join(self.apex) + ".").encode() if self.apex else b""
        if _is_under(self.origin, self.apex):
            inner = self.origin[: len(self.origin) - len(self.apex)]
            self.rel_suffix = ("." + ".".join(inner)).encode() if inner else b""
        else:
            self.rel_suffix = None

    def feed(self, first_line: int, chunk: bytes) -> Iterator[Batch]:
        lines = chunk.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        special = any(byte in chunk for byte in _SPECIAL_BYTES)
        self_names: list[bytes] = []
        self_index: list[int] = []
        below_names: list[bytes] = []
        below_index: list[int] = []
        fast_owner: bytes | None = None  # the last fast-path owner, for inherited owners
        grouped = self.group is not None
        apex_suffix, rel_suffix = self.apex_suffix, self.rel_suffix
        for i, line in enumerate(lines):
            if not grouped:
                parts = line.split()
                n = len(parts)
                if n == 0:
                    continue  # blank
                if (
                    3 <= n <= 5
                    and parts[-1] == b"."
                    and parts[-2] in _FAST_CNAME
                    and line[0] != _SPACE
                    and line[0] != _TAB
                    and (
                        n == 3
                        or (n == 4 and (parts[1] in _FAST_IN or parts[1].isdigit()))
                        or (
                            n == 5
                            and (
                                (parts[1] in _FAST_IN and parts[2].isdigit())
                                or (parts[1].isdigit() and parts[2] in _FAST_IN)
                            )
                        )
                    )
                ):
                    owner = parts[0]
                    trig: bytes | None
                    if (
                        owner[0] == _AT  # the apex
                        or owner[0] == _DOLLAR  # a directive
                        or (special and any(byte in owner for byte in _SPECIAL_BYTES))
                    ):
                        trig = None
                    elif owner[-1] == _DOT:
                        if not apex_suffix:
                            trig = owner[:-1]
                        elif owner.endswith(apex_suffix):
                            trig = owner[: -len(apex_suffix)]
                        else:
                            trig = None  # outside the apex, or a case difference
                    elif rel_suffix is None:
                        trig = None
                    else:
                        trig = owner + rel_suffix if rel_suffix else owner
                    if trig:
                        if trig[0] != _STAR:
                            fast_owner = owner
                            self_names.append(trig)
                            self_index.append(i)
                            continue
                        if trig[:2] == b"*." and len(trig) > 2:
                            fast_owner = owner
                            below_names.append(trig[2:])
                            below_index.append(i)
                            continue
            if fast_owner is not None:
                self._set_last_owner(fast_owner)
                fast_owner = None
            self.line(first_line + i, line)
            grouped = self.group is not None
            apex_suffix, rel_suffix = self.apex_suffix, self.rel_suffix
        if fast_owner is not None:
            self._set_last_owner(fast_owner)
        yield from self._fast_batch(self_names, self_index, MATCH_SELF, lines, first_line)
        yield from self._fast_batch(below_names, below_index, MATCH_BELOW, lines, first_line)
        yield from self.sink.drain()

    def _set_last_owner(self, owner: bytes) -> None:
        try:
            self.last_owner = (owner.decode("utf-8"), self.origin)
        except UnicodeDecodeError:
            self.last_owner = None  # rejected with its line; its inherited lines go with it

    def _fast_batch(
        self, names: list[bytes], index: list[int], match: int, lines: list[bytes], first: int
    ) -> Iterator[Batch]:
        """Check a chunk's fast-path trigger names at once; the few that are not canonical
        (upper-case bytes are fine) go to the normaliser one by one."""
        if not names:
            return
        lowered = (b"\n".join(names) + b"\n").lower()
        clean = lowered.split(b"\n")
        clean.pop()
        suspects = suspect_lines(lowered).tolist()
        removed = bool(suspects)
        if b"rpz-" in lowered:
            # IP, NSIP, NSDNAME and client-IP triggers are skipped, as the slow path does.
            for j, name in enumerate(clean):
                if b"rpz-" not in name:
                    continue
                labels = name.split(b".")
                text = lines[index[j]].decode("utf-8", "replace")
                if labels[-1] == b"rpz-ip" and _special_label(labels[:-1]) is None:
                    owner = tuple(label.decode("ascii", "replace") for label in labels)
                    if match == MATCH_BELOW:
                        owner = ("*", *owner)
                    trigger = self._trigger(first + index[j], text, owner)
                    if trigger is not None:
                        self.sink.add(trigger[0], self.pid(Action.NXDOMAIN), trigger[1])
                else:
                    reason = _special_label(labels)
                    if reason is None:
                        continue
                    self.report.skip(reason, first + index[j], text)
                clean[j] = b""
                removed = True
        for j in suspects:
            if not clean[j]:
                continue  # skipped above
            clean[j] = b""
            line_no = first + index[j]
            text = lines[index[j]].decode("utf-8", "replace")
            try:
                trigger = names[j].decode("utf-8")
            except UnicodeDecodeError:
                self.report.reject("encoding", line_no, text)
                continue
            accepted = self._accept(trigger, line_no, text)
            if accepted is not None:
                self.sink.add(accepted, self.pid(Action.NXDOMAIN), match)
        if removed:
            clean = [name for name in clean if name]
        if clean:
            self.report.entries += len(clean)
            yield Batch(clean, self.pid(Action.NXDOMAIN), match)

    def finish(self) -> Iterator[Batch]:
        while self.group is not None:
            self._abandon_group()
        for (name, match), (v4, v6) in self.local.items():
            self.sink.add(name, self._intern(Action.LANDING, tuple(v4), tuple(v6)), match)
        self.local = {}
        yield from self.sink.drain()

    # -- the slow path: one physical line ---------------------------------------------------

    def line(self, line_no: int, raw: bytes) -> None:
        text = decode_line(raw, line_no, self.report)
        if text is None:
            if self.group is None and raw[:1] not in (b" ", b"\t"):
                self.last_owner = None  # the owner went with the line: so do inherited lines
            return
        group = self.group
        if group is not None:
            try:
                tokens, depth = _tokenize(text, group.depth)
            except Rejected as rejected:
                self.report.reject(rejected.reason, line_no, text)
                return
            group.lines.append((line_no, raw))
            group.tokens.extend(tokens)
            group.depth = depth
            if depth == 0:
                self.group = None
                self._record(group.line_no, group.text, group.inherit, group.tokens)
            elif len(group.lines) > MAX_GROUP_LINES:
                self._abandon_group()
            return
        inherit = text[:1] in (" ", "\t")
        try:
            tokens, depth = _tokenize(text, 0)
        except Rejected as rejected:
            self.report.reject(rejected.reason, line_no, text)
            if not inherit:
                self.last_owner = None
            return
        if depth:
            self.group = _Group(line_no, text, inherit, tokens, depth)
        elif tokens:
            self._record(line_no, text, inherit, tokens)

    def _abandon_group(self) -> None:
        """A `(` that did not close: reject its line and read the lines it took on their own."""
        group = self.group
        assert group is not None
        self.group = None
        self.report.reject("unbalanced_parens", group.line_no, group.text)
        for line_no, raw in group.lines:
            self.line(line_no, raw)

    # -- one record ---------------------------------------------------------------------

    def _record(self, line_no: int, text: str, inherit: bool, tokens: list[str]) -> None:
        report = self.report
        if not inherit and tokens[0].startswith("$"):
            self._directive(line_no, text, tokens)
            return
        if inherit:
            if self.last_owner is None:
                report.reject("no_owner", line_no, text)
                return
            owner, origin = self.last_owner
            rest = tokens
        else:
            owner, origin = tokens[0], self.origin
            self.last_owner = (owner, origin)
            rest = tokens[1:]

        # Optional TTL and class, in either order, then the type.
        i, seen_ttl, seen_class = 0, False, False
        while i < len(rest):
            token = rest[i]
            upper = token.upper()
            if not seen_class and upper in _CLASSES:
                if upper != "IN":
                    report.skip("rpz_unsupported_class", line_no, text)
                    return
                seen_class = True
            elif not seen_ttl and _TTL_RE.fullmatch(token):
                seen_ttl = True
            else:
                break
            i += 1
        if i == len(rest):
            report.reject("missing_type", line_no, text)
            return
        rtype = rest[i].upper()
        rdata = rest[i + 1 :]
        if rtype not in ("CNAME", "A", "AAAA", "SOA", "NS") and not _is_record_type(rtype):
            report.reject("bad_type", line_no, text)
            return

        try:
            labels, absolute = _labels(owner, origin)
        except Rejected as rejected:
            report.reject(rejected.reason, line_no, text)
            return
        lowered = _lower(labels)
        if rtype == "SOA":
            self._soa(line_no, text, lowered, absolute or bool(origin), rdata)
            return
        if rtype == "NS" and (lowered == self.apex or lowered == self.soa_owner):
            return  # the apex NS every zone has
        if not _is_under(lowered, self.apex):
            report.reject("outside_origin", line_no, text)
            return
        rel = labels[: len(labels) - len(self.apex)]
        if not rel:
            report.skip("rpz_apex_record", line_no, text)
            return
        for label in reversed(rel[:-1] if rel[-1].lower() == "rpz-ip" else rel):
            special = _SPECIAL_LABELS.get(label.lower())
            if special is not None:
                report.skip(special, line_no, text)
                return

        if rtype == "CNAME":
            self._cname(line_no, text, rel, rdata)
        elif rtype in ("A", "AAAA"):
            self._local_data(line_no, text, rel, rtype, rdata)
        else:
            report.skip("rpz_unsupported_type", line_no, text)

    def _directive(self, line_no: int, text: str, tokens: list[str]) -> None:
        report = self.report
        keyword = tokens[0].upper()
        if keyword == "$INCLUDE":
            report.reject("include_unsupported", line_no, text)  # never read other files
        elif keyword == "$TTL":
            if len(tokens) != 2 or not _TTL_RE.fullmatch(tokens[1]):
                report.reject("bad_directive", line_no, text)
        elif keyword == "$ORIGIN":
            if len(tokens) != 2:
                report.reject("bad_directive", line_no, text)
                return
            try:
                labels, _ = _labels(tokens[1], self.origin)
            except Rejected:
                report.reject("bad_directive", line_no, text)
                return
            origin = _lower(labels)
            self.origin = origin
            self.origin_directive = True
            if not self.apex or not _is_under(origin, self.apex):
                self.apex = origin  # a new zone, not an abbreviation inside this one
            self._update_fast()
        else:
            report.reject("unknown_directive", line_no, text)

    def _soa(
        self, line_no: int, text: str, owner: tuple[str, ...], sets_apex: bool, rdata: list[str]
    ) -> None:
        if len(rdata) != 7:
            self.report.reject("bad_rdata", line_no, text)
            return
        self.soa_owner = owner
        if sets_apex:
            self.apex = owner
            if not self.origin_directive:
                self.origin = owner
            self._update_fast()

    def _cname(self, line_no: int, text: str, rel: tuple[str, ...], rdata: list[str]) -> None:
        report = self.report
        if len(rdata) != 1:
            report.reject("bad_rdata", line_no, text)
            return
        target = rdata[0].lower()
        action = _CNAME_ACTIONS.get(target)
        if action is None:
            if target == "rpz-tcp-only.":
                report.skip("rpz_tcp_only", line_no, text)
                return
            if target == ".".join(rel).lower() + ".":
                action = Action.ALLOW  # the deprecated PASSTHRU: a CNAME to the trigger itself
            else:
                report.skip("rpz_cname_rewrite", line_no, text)
                return
        trigger = self._trigger(line_no, text, rel)
        if trigger is not None:
            self.sink.add(trigger[0], self.pid(action), trigger[1])

    def _local_data(
        self, line_no: int, text: str, rel: tuple[str, ...], rtype: str, rdata: list[str]
    ) -> None:
        if len(rdata) != 1 or "%" in rdata[0]:
            self.report.reject("bad_rdata", line_no, text)
            return
        try:
            if rtype == "A":
                address = str(ipaddress.IPv4Address(rdata[0]))
            else:
                address = str(ipaddress.IPv6Address(rdata[0]))
        except ValueError:
            self.report.reject("bad_rdata", line_no, text)
            return
        trigger = self._trigger(line_no, text, rel)
        if trigger is None:
            return
        v4, v6 = self.local.setdefault(trigger, ([], []))
        addresses = v4 if rtype == "A" else v6
        if address not in addresses:
            addresses.append(address)

    def _trigger(self, line_no: int, text: str, rel: tuple[str, ...]) -> tuple[bytes, int] | None:
        if rel[-1].lower() == "rpz-ip":
            try:
                return rpz_ip_prefix(rel[:-1]).encode("ascii"), MATCH_IP
            except Rejected as rejected:
                self.report.reject(rejected.reason, line_no, text)
                return None
        match = MATCH_SELF
        if rel[0] == "*":
            if len(rel) == 1:
                self.report.skip("rpz_wildcard_apex", line_no, text)  # would match every name
                return None
            match = MATCH_BELOW
            rel = rel[1:]
        name = self._accept(".".join(rel), line_no, text)
        return None if name is None else (name, match)

    def _accept(self, trigger: str, line_no: int, text: str) -> bytes | None:
        """Normalise a trigger name (wildcard already taken off); None when it is rejected or
        is an IP literal (kept apart in the report)."""
        if trigger.startswith(".") or trigger.endswith(".") or ".." in trigger:
            self.report.reject("empty_label", line_no, text)
            return None
        if _BAD_TRIGGER_RE.search(trigger):
            self.report.reject("bad_character", line_no, text)
            return None
        try:
            name = normalise(trigger)
        except Rejected as rejected:
            self.report.reject(rejected.reason, line_no, text)
            return None
        if name.is_ip:
            self.report.add_ip(name.name)
            return None
        return name.name.encode("ascii")


def rpz_ip_prefix(labels: tuple[str, ...]) -> str:
    """The canonical prefix of an rpz-ip trigger's labels (without `rpz-ip`): the prefix length,
    then the address's octets (IPv4, exactly four) or 16-bit groups (IPv6, `zz` for the `::`
    run) least significant first. Host bits must be clear, as BIND requires."""
    if not labels or labels[0] == "*":
        raise Rejected("rpz_ip_wildcard" if labels else "rpz_ip_syntax")
    length, parts = labels[0], [label.lower() for label in reversed(labels[1:])]
    if not length.isdigit() or not parts:
        raise Rejected("rpz_ip_syntax")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        address = ".".join(parts)
    elif parts.count("zz") <= 1 and (len(parts) == 8 or "zz" in parts):
        address = ":".join("" if p == "zz" else p for p in parts)
        if parts[0] == "zz":
            address = ":" + address
        if parts[-1] == "zz":
            address += ":"
    else:
        raise Rejected("rpz_ip_syntax")
    try:
        network = parse_prefix(f"{address}/{length}")
    except Rejected:
        raise Rejected("rpz_ip_syntax") from None
    if network.prefixlen == 0 or str(network.network_address) != str(ipaddress.ip_address(address)):
        raise Rejected("rpz_ip_prefix")  # /0, or host bits set
    return str(network)


def _special_label(labels: list[bytes]) -> str | None:
    """The skip reason for a lower-case fast-path name under a special RPZ label."""
    for label in reversed(labels):
        reason = _SPECIAL_LABELS.get(label.decode("ascii", "replace"))
        if reason is not None:
            return reason
    return None


def _is_record_type(mnemonic: str) -> bool:
    """A real record type (TXT, MX, TYPE65534...), as opposed to a typo or a meta type."""
    try:
        rdtype = dns.rdatatype.from_text(mnemonic)
    except dns.exception.DNSException:
        return False
    return not dns.rdatatype.is_metatype(rdtype)


def parse_rpz(
    stream: BinaryIO,
    spec: ListSpec,
    policies: PolicyTable,
    report: ParseReport,
    *,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[Batch]:
    """Parse an RPZ zone file into batches of QNAME trigger names. The list's own action and
    match scope do not apply: every record carries its action, every owner its scope."""
    report.format = "rpz"
    parser = _RpzParser(spec, policies, report)
    for first_line, chunk in read_chunks(stream, chunk_bytes):
        report.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        yield from parser.feed(first_line, chunk)
    yield from parser.finish()
