"""Types shared by every list parser: what a list is, what a parser yields, what it reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from resolver.lists.quality import DEFAULT_MAX_REJECTED_RATIO
from resolver.policy import Action, Ede, MatchMode

# How many example lines a report keeps per rejection reason: enough to find the pattern in a
# 6.7M-line list without keeping the whole mess in memory.
EXAMPLES_PER_REASON = 5
# IP entries are kept apart for a later stage; a bound keeps a hostile list from growing memory.
MAX_IP_ENTRIES = 1_000_000


KINDS = ("domain", "ip")


@dataclass(frozen=True, slots=True)
class ListSpec:
    """One configured list: where it is and what its entries mean."""

    name: str
    path: str
    category: str = "uncategorised"
    action: Action = Action.LANDING
    ede: Ede = Ede.BLOCKED
    match: MatchMode = MatchMode.SUBTREE
    format: str = "auto"  # auto | plain | hosts | adblock | rpz | dnsmasq | unbound
    landing_ipv4: tuple[str, ...] = ()
    landing_ipv6: tuple[str, ...] = ()
    list_index: int = 0  # position in config order, allowlists first
    # More rejected than this share of the entries given fails the list (resolver.lists.quality)
    max_rejected_ratio: float = DEFAULT_MAX_REJECTED_RATIO
    kind: str = "domain"  # domain | ip (addresses and prefixes: response-IP triggers)

    @property
    def is_allowlist(self) -> bool:
        return self.action is Action.ALLOW


@dataclass(slots=True)
class Batch:
    """Normalised names that share one policy id and one match scope.

    Names are ASCII bytes: lower case, no trailing dot, IDN already punycode. Parsers yield many
    batches; the compiler hashes them, the exporter writes them."""

    names: list[bytes]
    pid: int
    match: int  # MATCH_SELF | MATCH_BELOW flags from resolver.policy


@dataclass(slots=True)
class ParseReport:
    """What a parser saw in one file. Rejections are counted by reason with file:line examples;
    they never abort a load."""

    path: str
    format: str = "plain"
    lines: int = 0
    entries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    ip_entries: list[str] = field(default_factory=list)
    ip_entries_dropped: int = 0
    # The file being read, when a list is split into parts: examples name their own part.
    where: str = ""
    parts: int = 1

    def reject(self, reason: str, line_no: int, text: str) -> None:
        self.rejected[reason] += 1
        self._example(reason, line_no, text)

    def skip(self, reason: str, line_no: int, text: str) -> None:
        self.skipped[reason] += 1
        self._example(reason, line_no, text)

    def add_ip(self, ip: str) -> None:
        if len(self.ip_entries) < MAX_IP_ENTRIES:
            self.ip_entries.append(ip)
        else:
            self.ip_entries_dropped += 1

    def _example(self, reason: str, line_no: int, text: str) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            where = self.where or self.path
            examples.append(f"{where}:{line_no}: {text.strip()[:200]}")

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "format": self.format,
            "lines": self.lines,
            "entries": self.entries,
            "rejected": dict(self.rejected),
            "skipped": dict(self.skipped),
            "examples": self.examples,
            "ip_entries": len(self.ip_entries) + self.ip_entries_dropped,
            "parts": self.parts,
        }
