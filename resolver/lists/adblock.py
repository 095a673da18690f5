"""AdBlock-style DNS rules: `||example.com^` blocks, `@@||example.com^` is an exception.

Only the rules that mean "this domain and everything below it" are taken: `||name^` (optionally
`||name^|`, optionally `||*.name^`). Everything a DNS resolver cannot enforce exactly is skipped
and counted by reason, never guessed into a domain: URL paths, `$options`, cosmetic filters,
regular expressions, unanchored patterns and globs. A name part that fails the normaliser is
rejected with the normaliser's reason.

Exceptions get an ALLOW policy of the same list (same name, category and list index), so they
take part in precedence like an allowlist entry: the most specific name wins, and allow beats
block at the same name.

Fast path: most lines of a DNS blocklist are `||name^`. One Python pass keeps the inner name of
every such line, and the inner names are checked in bulk by `split_clean`; only the rest, and the
inner names it flags, go through the per-line classifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from resolver.lists.chunks import read_chunks, split_clean
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected, normalise
from resolver.lists.plain import EntrySink, decode_line, list_policy, match_flags
from resolver.policy import Action, Ede, Policy, PolicyTable

SKIP_PATH = "adblock_path"
SKIP_OPTIONS = "adblock_options"
SKIP_COSMETIC = "adblock_cosmetic"
SKIP_REGEX = "adblock_regex"
SKIP_UNANCHORED = "adblock_unanchored"
SKIP_GLOB = "adblock_glob"
SKIP_IP_EXCEPTION = "adblock_ip_exception"

# Element hiding, extended CSS, CSS injection, scriptlets (and their exceptions), HTML filters.
_COSMETIC_MARKERS = ("##", "#@#", "#?#", "#@?#", "#$#", "#@$#", "#%#", "#@%#", "$$", "$@$")
# `||example.com^ # note`: some hand-written lists put a comment after the rule.
_TRAILING_COMMENT = re.compile(r"\s+[#!].*$")
# Characters that make the part between `||` and `^` a URL rather than a host name.
_URL_CHARS = frozenset("/:?=&")


def _is_bracketed_ip(host: str) -> bool:
    """`[2001:db8::1]`: an IPv6 literal, whose colons are not a port."""
    return host.startswith("[") and host.endswith("]") and "/" not in host


def allow_policy(spec: ListSpec) -> Policy:
    """The policy of an `@@` exception: the list's identity with an ALLOW action."""
    return Policy(
        list_name=spec.name,
        category=spec.category,
        action=Action.ALLOW,
        ede=Ede.NONE,
        list_index=spec.list_index,
    )


class BlockAllowLines:
    """The per-line state of a format with blocks and exceptions (adblock, dnsmasq): the list's
    block policy and its allow policy, and where entries and counts go."""

    def __init__(self, spec: ListSpec, policies: PolicyTable, sink: EntrySink) -> None:
        self.spec = spec
        self.block_pid = policies.intern(list_policy(spec))
        self.allow_pid = policies.intern(allow_policy(spec))
        self.sink = sink
        self.report = sink.report


class _Rules(BlockAllowLines):
    def line(self, raw: bytes, line_no: int) -> None:
        text = decode_line(raw, line_no, self.report)
        if text is None:
            return
        rule = text.strip()
        if not rule or rule.startswith("!"):
            return  # blank or comment
        if rule.startswith("[") and rule.endswith("]"):
            return  # `[Adblock Plus 2.0]` header
        if rule.startswith("#") and not rule.startswith(("##", "#@", "#?", "#$", "#%")):
            return  # `# comment`
        if any(marker in rule for marker in _COSMETIC_MARKERS):
            self.report.skip(SKIP_COSMETIC, line_no, text)
            return
        exception = rule.startswith("@@")
        body = rule[2:] if exception else rule
        if body.startswith("/") and (body.endswith("/") or "/$" in body) and len(body) > 1:
            self.report.skip(SKIP_REGEX, line_no, text)
            return
        body = _TRAILING_COMMENT.sub("", body)
        if not body.startswith("||"):
            self.report.skip(SKIP_UNANCHORED, line_no, text)
            return
        body = body[2:]
        pattern, dollar, _options = body.partition("$")
        host, caret, rest = pattern.partition("^")
        url_like = bool(_URL_CHARS.intersection(host)) and not _is_bracketed_ip(host)
        if not caret:
            # `||example.com` is a prefix match in AdBlock (also example.com.evil.test), a URL
            # `||example.com/ads` is a path rule.
            reason = SKIP_PATH if url_like else SKIP_UNANCHORED
            self.report.skip(reason, line_no, text)
            return
        if (rest and rest != "|") or url_like:
            self.report.skip(SKIP_PATH, line_no, text)
            return
        if dollar:
            self.report.skip(SKIP_OPTIONS, line_no, text)
            return
        if "*" in (host[2:] if host.startswith("*.") else host):
            self.report.skip(SKIP_GLOB, line_no, text)
            return
        self.add(host, line_no, text, exception)

    def add(self, host: str, line_no: int, text: str, exception: bool) -> None:
        try:
            name = normalise(host)
        except Rejected as rejected:
            self.report.reject(rejected.reason, line_no, text)
            return
        if name.is_ip:
            if exception:
                # IP entries carry no policy of their own: an exception kept there would block.
                self.report.skip(SKIP_IP_EXCEPTION, line_no, text)
            else:
                self.report.add_ip(name.name)
            return
        pid = self.allow_pid if exception else self.block_pid
        self.sink.add(name.name.encode("ascii"), pid, match_flags(self.spec, name.wildcard))


def parse_adblock(
    stream: BinaryIO, spec: ListSpec, policies: PolicyTable, report: ParseReport
) -> Iterator[Batch]:
    report.format = "adblock"
    sink = EntrySink(report)
    rules = _Rules(spec, policies, sink)
    fast_match = match_flags(spec, wildcard=False)
    for first_line, chunk in read_chunks(stream):
        report.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        # Inner names of the `||name^` lines, with their offsets; every other line is slow.
        inner: list[bytes] = []
        inner_offsets: list[int] = []
        slow: list[int] = []
        for offset, line in enumerate(lines):
            if line.startswith(b"||") and line.endswith(b"^") and len(line) > 3:
                inner.append(line[2:-1])
                inner_offsets.append(offset)
            elif line:
                slow.append(offset)
        if inner:
            # One name per line, so line i of the joined block is inner[i]: a line with a
            # newline-free name never shifts, and a name with a `\r` or junk is simply dirty.
            clean, dirty = split_clean(b"\n".join(inner) + b"\n")
            if clean:
                report.entries += len(clean)
                yield Batch(clean, rules.block_pid, fast_match)
            slow.extend(inner_offsets[i] for i, _ in dirty)
            slow.sort()
        for offset in slow:
            rules.line(lines[offset], first_line + offset)
        yield from sink.drain()
