"""Plain domain lists: one or more names per line, `#` comments (whole-line or inline).

This is the shape of the regulator lists (TRUST+ Positif `domains_isp`), so it carries the fast
path: clean lines go from bytes to hashes without per-line Python work (see `chunks`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from resolver.lists.chunks import read_chunks, split_clean
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected, normalise
from resolver.policy import MATCH_BELOW, MATCH_SELF, MATCH_SUBTREE, MatchMode, Policy, PolicyTable

# Separators between several names on one line: whitespace, commas, semicolons, pipes.
_TOKEN_SPLIT = re.compile(r"[\s,;|]+")


def list_policy(spec: ListSpec) -> Policy:
    """The policy every entry of a list gets unless its format says otherwise (RPZ, adblock)."""
    return Policy(
        list_name=spec.name,
        category=spec.category,
        action=spec.action,
        ede=spec.ede,
        landing_ipv4=spec.landing_ipv4,
        landing_ipv6=spec.landing_ipv6,
        list_index=spec.list_index,
    )


def match_flags(spec: ListSpec, wildcard: bool) -> int:
    """`*.name` in a plain, hosts or adblock list is reduced to `name` with the list's scope (the
    architecture's rule: wildcards reduce to a domain). Under `match = "exact"` it keeps its
    literal meaning: names below, not the name itself."""
    if spec.match is MatchMode.SUBTREE:
        return MATCH_SUBTREE
    return MATCH_BELOW if wildcard else MATCH_SELF


def decode_line(raw: bytes, line_no: int, report: ParseReport) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        report.reject("encoding", line_no, raw.decode("utf-8", "replace"))
        return None


class EntrySink:
    """Collects the slow-path names of one chunk, grouped by (pid, match) into batches."""

    def __init__(self, report: ParseReport) -> None:
        self.report = report
        self.groups: dict[tuple[int, int], list[bytes]] = {}

    def add_token(self, token: str, line_no: int, line: str, pid: int, spec: ListSpec) -> None:
        try:
            name = normalise(token)
        except Rejected as rejected:
            self.report.reject(rejected.reason, line_no, line)
            return
        if name.is_ip:
            self.report.add_ip(name.name)
            return
        self.add(name.name.encode("ascii"), pid, match_flags(spec, name.wildcard))

    def add(self, name: bytes, pid: int, match: int) -> None:
        self.report.entries += 1
        self.groups.setdefault((pid, match), []).append(name)

    def drain(self) -> Iterator[Batch]:
        for (pid, match), names in self.groups.items():
            yield Batch(names, pid, match)
        self.groups = {}


def parse_plain(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    report.format = "plain"
    pid = policies.intern(list_policy(spec))
    fast_match = match_flags(spec, wildcard=False)
    sink = EntrySink(report)
    for first_line, chunk in read_chunks(stream):
        report.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        clean, dirty = split_clean(chunk)
        if clean:
            report.entries += len(clean)
            yield Batch(clean, pid, fast_match)
        for offset, raw in dirty:
            line_no = first_line + offset
            text = decode_line(raw, line_no, report)
            if text is None:
                continue
            body = text.split("#", 1)[0].strip()
            if not body:
                continue  # comment or blank
            for token in _TOKEN_SPLIT.split(body):
                if token:
                    sink.add_token(token, line_no, text, pid, spec)
        yield from sink.drain()
